"""The batched sampler applies each row's own parameters, as transformers' logits processors would."""

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from starchat.server.sampler import sample_rows

V = 300


def _logits(b, seed=0):
    return torch.randn(b, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_rows_take_the_argmax_after_the_repetition_penalty():
    logits, ids = _logits(3), [[1, 2, 3], [4], [5, 6]]
    got = sample_rows(logits.clone(), ids, [0, 0, 0], [50, 0, 5], [0.9, 1.0, 0.5], [1.5, 1.0, 3.0], [None] * 3)
    for i, (row_ids, pen) in enumerate(zip(ids, [1.5, 1.0, 3.0])):
        ref = RepetitionPenaltyLogitsProcessor(pen)(torch.tensor([row_ids]), logits[i : i + 1].clone())
        assert got[i] == int(ref.argmax())


def test_sampled_tokens_stay_inside_each_rows_top_k_and_top_p():
    logits = _logits(2, seed=1)
    reference = [
        LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(3)]),
        LogitsProcessorList([TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.3)]),
    ]
    allowed = [
        set(torch.nonzero(procs(torch.tensor([[0]]), logits[i : i + 1].clone())[0] > float("-inf")).flatten().tolist())
        for i, procs in enumerate(reference)
    ]
    seen = [set(), set()]
    for s in range(200):
        gens = [torch.Generator().manual_seed(s), None]
        for i, t in enumerate(sample_rows(logits.clone(), [[], []], [0.8, 0.8], [3, 0], [1.0, 0.3], [1.0, 1.0], gens)):
            seen[i].add(t)
    assert seen[0] == allowed[0]  # 200 draws from 3 tokens reach all of them
    assert seen[1] <= allowed[1] and len(allowed[1]) < V // 4


def test_a_seeded_row_repeats_whatever_shares_its_batch():
    logits = _logits(4, seed=2)
    alone = sample_rows(logits[:1].clone(), [[]], [1.0], [0], [1.0], [1.0], [torch.Generator().manual_seed(5)])
    mixed = sample_rows(
        logits.clone(),
        [[]] * 4,
        [1.0, 0.0, 0.7, 1.0],
        [0, 1, 40, 0],
        [1.0, 1.0, 0.9, 1.0],
        [1.0, 1.2, 1.0, 1.0],
        [torch.Generator().manual_seed(5), None, None, None],
    )
    assert mixed[0] == alone[0]
