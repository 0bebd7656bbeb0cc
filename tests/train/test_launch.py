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
