"""`training.report_to tensorboard`: the run's losses reach TensorBoard event files that TensorBoard reads back."""

from __future__ import annotations

import pytest

from starchat.train import load_config, train

pytestmark = pytest.mark.slow


def test_tensorboard_gets_the_training_and_validation_losses(make_overrides, tmp_path):
    pytest.importorskip("tensorboard")  # in the dev extras: CI has it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = make_overrides(tmp_path)
    over["training.report_to"] = "tensorboard"
    out = train(load_config(None, over))
    events = sorted(out.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {out}"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "eval/loss", "eval/end_token_accuracy"} <= tags, tags
    assert len(acc.Scalars("eval/loss")) == 2  # one per epoch
