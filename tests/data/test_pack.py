"""Packing keeps every token, restarts positions per dialogue, and dialogues never attend across."""

import pytest
import torch

from starchat.data.collate import DataCollatorForDialogues, DataCollatorForPacking
from starchat.data.pack import pack_dataset, plan_bins
from starchat.data.tokenize import tokenize_dataset
from starchat.errors import StarchatError


def dialogues(n):
    out = []
    for i in range(n):
        turns = [{"role": "user", "content": f"Question {i}: how do I sort?" + " more" * (i % 7)}]
        turns.append({"role": "assistant", "content": f"Use sorted() #{i}" + " really" * (i * 3 % 11)})
        out.append(turns)
    return out


@pytest.fixture
def tokenized(tokenizer):
    import datasets

    ds, _ = tokenize_dataset(datasets.Dataset.from_dict({"messages": dialogues(40)}), tokenizer)
    return ds


def test_plan_bins_keeps_every_index_once_within_the_block():
    lengths = [5, 9, 3, 7, 7, 1, 10, 2]
    bins = plan_bins(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 5  # 44 tokens -> at least 5 rows of 10


def test_pack_keeps_every_token_and_restarts_positions(tokenized):
    packed, stats = pack_dataset(tokenized, block_size=128)
    assert stats["tokens"] == sum(len(x) for x in tokenized["input_ids"]) == sum(len(x) for x in packed["input_ids"])
    pieces = []
    for ids, pos in zip(packed["input_ids"], packed["position_ids"]):
        assert len(ids) <= 128
        starts = [k for k, p in enumerate(pos) if p == 0] + [len(pos)]
        assert all(pos[a:b] == list(range(b - a)) for a, b in zip(starts, starts[1:]))
        pieces += [tuple(ids[a:b]) for a, b in zip(starts, starts[1:])]
    assert sorted(pieces) == sorted(tuple(x) for x in tokenized["input_ids"])
    assert stats["packing_efficiency"] > 0.9


def test_pack_refuses_a_dialogue_longer_than_the_block(tokenized):
    with pytest.raises(StarchatError, match="max_length <= block_size"):
        pack_dataset(tokenized, block_size=8)


def test_packed_dialogues_do_not_attend_to_each_other(tokenized, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    packed, _ = pack_dataset(tokenized, block_size=256)
    batch = DataCollatorForPacking(pad_token_id=0)([packed[0], packed[len(packed) - 1]])
    assert "attention_mask" not in batch
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        pos = batch["position_ids"][0].tolist()
        starts = [k for k, p in enumerate(pos) if p == 0] + [len(packed[0]["input_ids"])]
        assert len(starts) > 2  # the row holds several dialogues
        for a, b in zip(starts, starts[1:]):
            alone = model(input_ids=batch["input_ids"][:1, a:b], use_cache=False).logits
            torch.testing.assert_close(logits[0, a:b], alone[0], atol=1e-4, rtol=1e-4)


def test_packed_loss_equals_the_sum_of_per_dialogue_losses(tokenized, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows = [tokenized[i] for i in range(6)]
    packed, _ = pack_dataset(tokenized.select(range(6)), block_size=512)
    assert len(packed) == 1
    b = DataCollatorForPacking(pad_token_id=0)([packed[0]])
    with torch.no_grad():
        out = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False)
        shift = out.logits[0, :-1]
        tgt = b["labels"][0, 1:]
        packed_sum = torch.nn.functional.cross_entropy(shift, tgt, ignore_index=-100, reduction="sum")
        total = 0.0
        for r in rows:
            lg = model(input_ids=torch.tensor([r["input_ids"]]), use_cache=False).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(
                lg, torch.tensor(r["labels"][1:]), ignore_index=-100, reduction="sum"
            )
    torch.testing.assert_close(packed_sum, total, atol=1e-3, rtol=1e-4)


def test_packing_collator_pads_labels_and_positions():
    feats = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 0]},
        {"input_ids": [8], "labels": [8], "position_ids": [0]},
    ]
    b = DataCollatorForPacking(pad_token_id=1)(feats)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert b["position_ids"].tolist() == [[0, 1, 0], [0, 0, 1]]


def test_dialogue_collator_masks_padding():
    b = DataCollatorForDialogues(pad_token_id=1, pad_to_multiple_of=4)([{"input_ids": [5, 6], "labels": [-100, 6]}])
    assert b["input_ids"].tolist() == [[5, 6, 1, 1]] and b["attention_mask"].tolist() == [[1, 1, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, -100, -100]]
