"""Batched sampling with per-row parameters: repetition penalty, temperature, top-k, top-p, seeds.

The same rules as transformers' logits processors (RepetitionPenalty -> Temperature -> TopK -> TopP),
applied to the whole batch with tensor ops: calling the processors row by row cost 6 ms a row on a
49k vocabulary and dominated every decode step.
"""

from __future__ import annotations

from typing import Sequence

import torch


def sample_rows(logits: torch.Tensor, ids: Sequence[Sequence[int]], temperature: Sequence[float],
                top_k: Sequence[int], top_p: Sequence[float], penalty: Sequence[float],
                generators: Sequence[torch.Generator]) -> list[int]:
    """One next token per row of ``logits`` [B, V]; ``ids`` are each row's tokens so far (for the penalty)."""
    scores = logits.float().clone()
    bsz, vocab = scores.shape
    dev = scores.device
    pen = torch.tensor(penalty, device=dev)
    if bool((pen != 1.0).any()):
        rows = torch.repeat_interleave(torch.arange(bsz, device=dev),
                                       torch.tensor([len(x) for x in ids], device=dev))
        cols = torch.tensor([t for x in ids for t in x], dtype=torch.long, device=dev)
        seen = scores[rows, cols]
        p = pen[rows]
        scores[rows, cols] = torch.where(seen < 0, seen * p, seen / p)
    temp = torch.tensor(temperature, device=dev)
    greedy = temp <= 0
    out = scores.argmax(-1)
    if bool(greedy.all()):
        return out.tolist()
    scores = scores / torch.where(greedy, torch.ones_like(temp), temp)[:, None]
    # Top-k first (0 = off): only the best kmax candidates of each row are kept, sorted.
    ks = torch.tensor([k if 0 < k < vocab else vocab for k in top_k], device=dev)
    kmax = int(ks.max())
    cand, cand_idx = torch.topk(scores, kmax, dim=-1, sorted=True)
    ranks = torch.arange(kmax, device=dev)[None, :]
    cand = cand.masked_fill(ranks >= ks[:, None], float("-inf"))
    # Top-p: keep the smallest prefix whose probability reaches top_p (always at least one token).
    probs = torch.softmax(cand, dim=-1)
    before = probs.cumsum(-1) - probs
    p_max = torch.tensor([p if p < 1.0 else float("inf") for p in top_p], device=dev)  # 1.0 = off
    cand = cand.masked_fill(before >= p_max[:, None], float("-inf"))
    probs = torch.softmax(cand, dim=-1)
    for i in range(bsz):
        if not greedy[i]:
            pick = torch.multinomial(probs[i], 1, generator=generators[i])
            out[i] = cand_idx[i, pick[0]]
    return out.tolist()
