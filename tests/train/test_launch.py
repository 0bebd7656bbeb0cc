"""`--accelerate-config ddp|zero3|fsdp` re-launches the same command through `accelerate launch`."""

from __future__ import annotations

import sys

import pytest

from starchat.cli import main
from starchat.errors import StarchatError
from starchat.train import launch


def test_launch_command_uses_the_shipped_config():
    cmd = launch.launch_command("zero3", ["r.yaml", "--training.seed", "1"], num_processes=8)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    cfg = cmd[cmd.index("--config_file") + 1]
    assert cfg.endswith("accelerate_configs/zero3.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[-5:] == ["starchat", "train", "r.yaml", "--training.seed", "1"]


def test_unknown_accelerate_config_is_rejected():
    with pytest.raises(StarchatError, match="neither one of"):
        launch.resolve_accelerate_config("zero4")


def test_cli_relaunches_with_the_same_overrides(tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name_or_path: m\ndata:\n  dataset: d\ntraining:\n  output_dir: o\n")
    calls = []
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.setattr(launch, "relaunch", lambda name, argv, n: calls.append((name, argv, n)) or 0)
    assert main(["train", str(recipe), "--accelerate-config", "fsdp", "--training.seed", "7"]) == 0
    assert calls == [("fsdp", [str(recipe), "--training.accelerate_config", "fsdp", "--training.seed", "7"], None)]


def _recipe(tmp_path, model_dir, dataset_dir, out: str, batch: int) -> str:
    recipe = tmp_path / f"{out}.yaml"
    recipe.write_text(
        f"model:\n  name_or_path: {model_dir}\n"
        f"data:\n  dataset: {dataset_dir}\n  max_length: 64\n  block_size: 128\n"
        f"training:\n  output_dir: {tmp_path / out}\n  num_train_epochs: 2\n  per_device_train_batch_size: {batch}\n"
        "  learning_rate: 3.0e-3\n  warmup_ratio: 0.0\n  use_cpu: true\n  disable_tqdm: true\n")
    return str(recipe)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_matches_one_process_with_the_same_global_batch(tiny_model_dir, dialogue_dir,
                                                                                 tmp_path):
    """The real path: `accelerate launch` with the shipped ddp config, 2 CPU processes (gloo)."""
    import json
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != launch.LAUNCHED_ENV}
    ddp = _recipe(tmp_path, tiny_model_dir, dialogue_dir, "ddp", batch=2)
    one = _recipe(tmp_path, tiny_model_dir, dialogue_dir, "one", batch=4)
    for recipe, extra in ((ddp, ["--accelerate-config", "ddp", "--num-processes", "2"]), (one, [])):
        run = subprocess.run([sys.executable, "-m", "starchat", "train", recipe, *extra], env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
    res = {k: json.loads((tmp_path / k / "trainer_results.json").read_text()) for k in ("ddp", "one")}
    assert res["ddp"]["global_step"] == res["one"]["global_step"]  # the ranks split the data, not repeat it
    assert res["ddp"]["best_eval_loss"] == pytest.approx(res["one"]["best_eval_loss"], rel=0.01)
    assert "- num_devices: 2" in (tmp_path / "ddp" / "README.md").read_text()
