"""The new tokens' rows: larger steps with training.new_token_lr_multiplier, and the end-token accuracy metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from starchat.train.new_tokens import end_token_metrics
from starchat.train.run import build


def _one_step(overrides: dict, multiplier: float) -> tuple[dict, dict, list[int]]:
    """Parameters before and after one optimizer step, and the new tokens' IDs."""
    from starchat.train import load_config
    from starchat.train.model import new_token_ids

    over = dict(
        overrides,
        **{
            "training.max_steps": 1,
            "training.eval_strategy": "no",
            "training.save_strategy": "no",
            "training.load_best_model_at_end": False,
            "training.new_token_lr_multiplier": multiplier,
        },
    )
    torch.manual_seed(0)  # the same LoRA initialisation in both runs
    trainer, tok, _, _ = build(load_config(None, over))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return before, after, new_token_ids(tok, "starchat")


def test_new_rows_move_multiplier_times_as_far_and_others_do_not_change(make_overrides, tmp_path):
    b1, a1, ids = _one_step(make_overrides(tmp_path / "x1"), 1.0)
    b10, a10, _ = _one_step(make_overrides(tmp_path / "x10"), 10.0)
    name = next(n for n in b1 if "wte" in n)  # GPT-BigCode ties lm_head to this matrix
    d1, d10 = a1[name] - b1[name], a10[name] - b10[name]
    assert d1[ids].abs().sum() > 0
    torch.testing.assert_close(d10[ids], 10 * d1[ids], rtol=1e-4, atol=1e-7)
    others = torch.ones(d1.shape[0], dtype=torch.bool)
    others[ids] = False
    torch.testing.assert_close(d10[others], d1[others])
    for n in b1:  # the rest of the model took the very same step
        if n != name:
            torch.testing.assert_close(a10[n], a1[n])


@pytest.mark.slow
def test_lora_trainable_token_rows_are_scaled_too(make_overrides, plain_base_dir, tmp_path):
    lora = {"model.name_or_path": str(plain_base_dir), "lora.enabled": True, "lora.r": 4, "lora.alpha": 8}
    b1, a1, _ = _one_step({**make_overrides(tmp_path / "x1"), **lora}, 1.0)
    b5, a5, _ = _one_step({**make_overrides(tmp_path / "x5"), **lora}, 5.0)
    rows = [n for n in b1 if "trainable_tokens_delta" in n]
    assert rows
    for n in rows:
        torch.testing.assert_close(a5[n] - b5[n], 5 * (a1[n] - b1[n]), rtol=1e-4, atol=1e-7)
    lora_a = next(n for n in b1 if "lora_A" in n)
    torch.testing.assert_close(a5[lora_a], a1[lora_a])


def test_end_token_accuracy_counts_turn_ends_predicted_one_position_early():
    end = 9
    labels = np.array([[-100, 4, 5, end, -100, 6, end]])
    # position t predicts label t+1: the first <|end|> (label index 3) is predicted at index 2, hit;
    # the second (index 6) at index 5, missed.
    preds = np.array([[4, 5, end, 0, 6, 7, 0]])
    m = end_token_metrics(end)(EvalPrediction(predictions=preds, label_ids=labels))
    assert m["end_token_accuracy"] == pytest.approx(0.5)
    assert m["token_accuracy"] == pytest.approx(4 / 5)  # 4, 5, end, 6 right; the last end wrong


def test_padding_between_eval_batches_is_ignored():
    labels = np.array([[-100, 3, 9], [-100, -100, -100]])
    preds = np.array([[3, 9, -100], [-100, -100, -100]])
    m = end_token_metrics(9)(EvalPrediction(predictions=preds, label_ids=labels))
    assert m == {"token_accuracy": 1.0, "end_token_accuracy": 1.0}


def test_sharded_runs_refuse_the_multiplier_instead_of_losing_it(make_overrides, tmp_path):
    from starchat.errors import StarchatError
    from starchat.train import load_config

    over = dict(make_overrides(tmp_path), **{"training.new_token_lr_multiplier": 5})
    trainer, *_ = build(load_config(None, over))
    trainer.is_fsdp_enabled = True  # as a custom accelerate YAML with FSDP would set it
    with pytest.raises(StarchatError, match="without DeepSpeed and FSDP"):
        trainer.create_optimizer()
