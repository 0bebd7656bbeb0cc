"""Resume: a run killed after N steps and started again ends where an uninterrupted run ends."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from starchat.train import load_config, train
from starchat.train.checkpoint import COMPLETE_MARKER

pytestmark = pytest.mark.slow


class Killed(RuntimeError):
    pass


class KillAfterSave(TrainerCallback):
    """Stands in for a kill: stops the process right after the checkpoint of ``step`` is saved."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


def _overrides(make_overrides, tmp):
    over = make_overrides(tmp)
    over.update(
        {
            "training.num_train_epochs": 3,
            "training.save_strategy": "steps",
            "training.save_steps": 4,
            "training.eval_strategy": "steps",
            "training.eval_steps": 4,
            "training.save_total_limit": 5,
            "training.load_best_model_at_end": False,
        }
    )
    return over


def _final(out):
    res = json.loads((out / "trainer_results.json").read_text())
    losses = [e["loss"] for e in res["log_history"] if "loss" in e]
    evals = [e["eval_loss"] for e in res["log_history"] if "eval_loss" in e]
    return load_file(out / "model.safetensors"), losses[-1], evals[-1], res["global_step"]


def test_killed_run_resumes_from_last_complete_checkpoint(make_overrides, tmp_path, caplog):
    ref = train(load_config(None, _overrides(make_overrides, tmp_path / "a")))

    cfg = load_config(None, _overrides(make_overrides, tmp_path / "b"))
    with pytest.raises(Killed):
        train(cfg, callbacks=[KillAfterSave(8)])
    ckpts = cfg.training.output_dir + "/checkpoints"
    # The kill hit while checkpoint-8 was being written: without its marker it must not be trusted.
    (tmp_path / "b" / "run" / "checkpoints" / "checkpoint-8" / COMPLETE_MARKER).unlink()
    assert not (tmp_path / "b" / "run" / "model.safetensors").exists()

    with caplog.at_level("WARNING", logger="starchat.train.run"):
        resumed = train(load_config(None, _overrides(make_overrides, tmp_path / "b")))
    assert f"resuming from {ckpts}/checkpoint-4" in caplog.text
    assert (tmp_path / "b" / "run" / "checkpoints" / "checkpoint-8" / COMPLETE_MARKER).is_file()  # redone

    w_ref, loss_ref, eval_ref, steps_ref = _final(ref)
    w_res, loss_res, eval_res, steps_res = _final(resumed)
    assert steps_res == steps_ref
    assert loss_res == pytest.approx(loss_ref, rel=1e-3)
    assert eval_res == pytest.approx(eval_ref, rel=1e-3)
    for name, t in w_ref.items():
        assert (w_res[name] - t).abs().max().item() < 1e-4, name


def test_full_disk_during_a_save_leaves_no_checkpoint_that_looks_complete(
    make_overrides, tmp_path, monkeypatch, caplog
):
    import errno
    import io

    import torch

    from starchat.train.checkpoint import last_complete_checkpoint

    real_save = torch.save

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        if not str(f).endswith("checkpoint-8/optimizer.pt"):
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        with open(f, "wb") as fh:  # half the optimizer state reaches the disk, then it is full
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    over = _overrides(make_overrides, tmp_path)
    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    with pytest.raises(OSError, match="No space left"):
        train(load_config(None, over))
    monkeypatch.setattr(torch, "save", real_save)
    run_dir = tmp_path / "run" / "checkpoints"
    assert (run_dir / "checkpoint-8" / "optimizer.pt").is_file()  # the half-written checkpoint is there...
    assert not (run_dir / "checkpoint-8" / COMPLETE_MARKER).exists()  # ...but does not look complete
    assert last_complete_checkpoint(run_dir) == run_dir / "checkpoint-4"
    planned = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())["max_steps"]

    with caplog.at_level("WARNING", logger="starchat.train.run"):
        out = train(load_config(None, over))
    assert f"resuming from {run_dir}/checkpoint-4" in caplog.text
    assert json.loads((out / "trainer_results.json").read_text())["global_step"] == planned > 8
