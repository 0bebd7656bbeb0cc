"""`--accelerate-config ddp|zero3|fsdp` re-launches the same command through `accelerate launch`."""

from __future__ import annotations

import sys

import pytest

from starchat.cli import main
from starchat.errors import StarchatError
from starchat.train import launch
from starchat.train.checkpoint import FINISHED_MARKER
from starchat.train.config import TrainingConfig, load_config


def test_launch_command_uses_the_shipped_config():
    t = TrainingConfig(accelerate_config="zero3", num_processes=8)
    cmd = launch.launch_command(t, ["r.yaml", "--training.seed", "1"])
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
    monkeypatch.setattr(launch, "relaunch", lambda t, argv: calls.append((t.accelerate_config, argv)) or 0)
    assert main(["train", str(recipe), "--accelerate-config", "fsdp", "--training.seed", "7"]) == 0
    assert calls == [("fsdp", [str(recipe), "--training.accelerate_config", "fsdp", "--training.seed", "7"])]


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_distributed_type_is_read_from_the_config(name, kind):
    assert launch.distributed_type(name) == kind


def test_zero3_without_deepspeed_is_refused_before_launching(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "deepspeed" else real(n, *a))
    monkeypatch.setattr(launch.subprocess, "call", lambda *a, **k: pytest.fail("launched anyway"))
    with pytest.raises(StarchatError, match=r"runs DeepSpeed, which is not installed: pip install 'starchat\[gpu\]'"):
        launch.relaunch(TrainingConfig(accelerate_config="zero3"), ["r.yaml"])


def test_multi_node_command_names_this_machine_and_the_rendezvous():
    t = TrainingConfig(
        accelerate_config="ddp",
        num_processes=16,
        num_machines=2,
        machine_rank=1,
        main_process_ip="10.0.0.1",
        main_process_port=29600,
    )
    cmd = launch.launch_command(t, ["r.yaml"])
    flags = dict(zip(cmd[3 : cmd.index("-m", 3)], cmd[4 : cmd.index("-m", 3)]))
    assert (flags["--num_processes"], flags["--num_machines"], flags["--machine_rank"]) == ("16", "2", "1")
    assert (flags["--main_process_ip"], flags["--main_process_port"]) == ("10.0.0.1", "29600")


def test_default_process_count_is_every_gpu_of_every_machine(monkeypatch):
    monkeypatch.setattr(launch, "_visible_gpus", lambda: 8)
    t = TrainingConfig(accelerate_config="zero3", num_machines=4, main_process_ip="h0")
    cmd = launch.launch_command(t, ["r.yaml"])
    assert cmd[cmd.index("--num_processes") + 1] == "32"


@pytest.mark.parametrize("bf16, fp16, expected", [(False, False, "no"), (True, False, "bf16"), (False, True, "fp16")])
def test_the_recipe_decides_mixed_precision_not_the_accelerate_config(bf16, fp16, expected):
    cmd = launch.launch_command(TrainingConfig(accelerate_config="ddp", bf16=bf16, fp16=fp16), ["r.yaml"])
    assert cmd[cmd.index("--mixed_precision") + 1] == expected  # every shipped config says bf16


def test_bf16_false_means_fp32_inside_an_accelerate_bf16_launch(monkeypatch, tmp_path, caplog):
    """`accelerate launch --config_file X` exports bf16; TrainingArguments would take it over bf16: false."""
    from starchat.train.run import training_arguments

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    cfg = load_config(
        None,
        {
            "model.name_or_path": "m",
            "data.dataset": "d",
            "training.output_dir": str(tmp_path),
            "training.bf16": "false",
            "training.use_cpu": True,
        },
    )
    with caplog.at_level("WARNING", logger="starchat.train.run"):
        args = training_arguments(cfg, tmp_path, has_eval=False)
    assert args.mixed_precision == "no"
    assert "asks for mixed precision 'bf16'; training.bf16/fp16 say 'no'" in caplog.text


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"training.num_machines": 2, "training.accelerate_config": "ddp"}, "needs .*main_process_ip"),
        ({"training.num_machines": 2, "training.main_process_ip": "h0"}, "needs training.accelerate_config"),
        (
            {
                "training.num_machines": 2,
                "training.machine_rank": 2,
                "training.accelerate_config": "ddp",
                "training.main_process_ip": "h0",
            },
            "machine_rank must be in 0 .. num_machines - 1",
        ),
        (
            {
                "training.num_machines": 2,
                "training.num_processes": 3,
                "training.accelerate_config": "ddp",
                "training.main_process_ip": "h0",
            },
            "positive multiple of training.num_machines",
        ),
    ],
)
def test_bad_multi_node_settings_are_refused(over, msg):
    base = {"model.name_or_path": "m", "data.dataset": "d", "training.output_dir": "o"}
    with pytest.raises(StarchatError, match=msg):
        load_config(None, {**base, **over})


def _recipe(tmp_path, model_dir, dataset_dir, out: str, batch: int) -> str:
    recipe = tmp_path / f"{out}.yaml"
    recipe.write_text(
        f"model:\n  name_or_path: {model_dir}\n"
        f"data:\n  dataset: {dataset_dir}\n  max_length: 64\n  block_size: 128\n"
        f"training:\n  output_dir: {tmp_path / out}\n  num_train_epochs: 2\n  per_device_train_batch_size: {batch}\n"
        "  learning_rate: 3.0e-3\n  warmup_ratio: 0.0\n  use_cpu: true\n  disable_tqdm: true\n"
    )
    return str(recipe)


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != launch.LAUNCHED_ENV}


def _results(out_dir):
    import json

    return json.loads((out_dir / "trainer_results.json").read_text())


def _train(recipe: str, *extra: str):
    """`starchat train RECIPE EXTRA...` in a fresh process, as a user runs it; fails the test on an error."""
    import subprocess

    run = subprocess.run(
        [sys.executable, "-m", "starchat", "train", recipe, *extra],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, dialogue_dir, tmp_path_factory):
    """The reference: one process with the global batch (4) that the 2-process runs split."""
    tmp = tmp_path_factory.mktemp("one")
    _train(_recipe(tmp, tiny_model_dir, dialogue_dir, "one", batch=4))
    return _results(tmp / "one")


@pytest.mark.slow
def test_two_process_ddp_on_cpu_matches_one_process_with_the_same_global_batch(
    tiny_model_dir, dialogue_dir, tmp_path, one_process
):
    """The real path: `accelerate launch` with the shipped ddp config, 2 CPU processes (gloo)."""
    run = _train(
        _recipe(tmp_path, tiny_model_dir, dialogue_dir, "ddp", batch=2),
        "--accelerate-config",
        "ddp",
        "--num-processes",
        "2",
    )
    assert run.stdout.count("model written to") == 1  # said by rank 0 only
    res = _results(tmp_path / "ddp")
    assert res["global_step"] == one_process["global_step"]  # the ranks split the data, not repeat it
    assert res["best_eval_loss"] == pytest.approx(one_process["best_eval_loss"], rel=0.01)
    assert "- num_devices: 2" in (tmp_path / "ddp" / "README.md").read_text()


@pytest.mark.slow
def test_two_machines_on_loopback_train_one_run(tiny_model_dir, dialogue_dir, tmp_path, one_process):
    """Multi-node for real: two `starchat train` commands, machine ranks 0 and 1, meet at 127.0.0.1 (gloo)."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = _recipe(tmp_path, tiny_model_dir, dialogue_dir, "nodes", batch=2)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "starchat",
                "train",
                recipe,
                "--accelerate-config",
                "ddp",
                "--num-processes",
                "2",
                "--num-machines",
                "2",
                "--machine-rank",
                str(rank),
                "--main-process-ip",
                "127.0.0.1",
                "--main-process-port",
                str(port),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "--machine_rank 1" in outs[1]
    res = _results(tmp_path / "nodes")
    assert res["global_step"] == one_process["global_step"]  # one world of 2, not two runs of 1
    assert res["best_eval_loss"] == pytest.approx(one_process["best_eval_loss"], rel=0.01)
    assert "- num_devices: 2" in (tmp_path / "nodes" / "README.md").read_text()


@pytest.mark.slow
def test_zero3_shards_on_cpu_resizes_the_embeddings_and_resumes(plain_base_dir, dialogue_dir, tmp_path):
    """The shipped zero3 config for real: DeepSpeed ZeRO-3 over 2 CPU processes (gloo), on a base that lacks
    the dialogue tokens, so the embeddings are resized and mean-initialised with their shards gathered."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pytest.importorskip("deepspeed")  # in the dev extras: CI has it
    _train(_recipe(tmp_path, plain_base_dir, dialogue_dir, "one", batch=4))
    zero3 = _recipe(tmp_path, plain_base_dir, dialogue_dir, "zero3", batch=2)
    run = _train(zero3, "--accelerate-config", "zero3", "--num-processes", "2")
    assert "DeepSpeed runs zero3 on the CPU" in run.stderr
    out, one = tmp_path / "zero3", _results(tmp_path / "one")
    res = _results(out)
    assert res["global_step"] == one["global_step"]
    assert res["best_eval_loss"] == pytest.approx(one["best_eval_loss"], rel=0.01)

    last = out / "checkpoints" / f"checkpoint-{res['global_step']}"
    shards = sorted((last / f"global_step{res['global_step']}").glob("zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2  # one partition of the optimizer state per rank
    state = torch.load(shards[0], weights_only=False, map_location="cpu")
    assert state["ds_config"]["zero_optimization"]["stage"] == 3
    assert state["optimizer_state_dict"]["partition_count"] == 2

    tok, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(plain_base_dir).get_input_embeddings().weight
    w = model.get_input_embeddings().weight  # saved whole (16-bit gather), resized to the tokenizer
    assert w.shape[0] == len(tok) == base.shape[0] + 4
    one_w = AutoModelForCausalLM.from_pretrained(tmp_path / "one").get_input_embeddings().weight
    assert torch.allclose(w[base.shape[0] :], one_w[base.shape[0] :], atol=0.02)  # same start, same training

    shutil.rmtree(last)  # the last checkpoint lost: the rerun resumes from the ZeRO partitions before it
    (out / FINISHED_MARKER).unlink()  # and the run no longer counts as finished (else the rerun does nothing)
    run = _train(zero3, "--accelerate-config", "zero3", "--num-processes", "2")
    assert "resuming from" in run.stderr
    again = _results(out)
    assert again["global_step"] == res["global_step"]
    assert again["best_eval_loss"] == pytest.approx(res["best_eval_loss"], rel=1e-3)


def _dpo_recipe(tmp_path, model_dir, pairs_dir, out: str, batch: int, reference: str) -> str:
    recipe = tmp_path / f"{out}.yaml"
    recipe.write_text(
        f"method: dpo\nmodel:\n  name_or_path: {model_dir}\ndata:\n  dataset: {pairs_dir}\n"
        f"dpo:\n  max_length: 128\n  reference: {reference}\n"
        f"training:\n  output_dir: {tmp_path / out}\n  num_train_epochs: 1\n  per_device_train_batch_size: {batch}\n"
        "  learning_rate: 1.0e-3\n  lr_scheduler_type: constant\n  warmup_ratio: 0.0\n  use_cpu: true\n"
        "  disable_tqdm: true\n"
    )
    return str(recipe)


@pytest.mark.slow
@pytest.mark.parametrize("config, reference", [("ddp", "precomputed"), ("zero3", "model")])
def test_dpo_on_two_processes_matches_one_process(tiny_model_dir, pairs_dir, tmp_path, config, reference):
    """DPO through the same launch path: ddp with the reference log-probs precomputed once and shared by the
    ranks, and DeepSpeed ZeRO-3 with a sharded frozen reference model."""
    if config == "zero3":
        pytest.importorskip("deepspeed")
    _train(_dpo_recipe(tmp_path, tiny_model_dir, pairs_dir, "one", 4, reference))
    run = _train(
        _dpo_recipe(tmp_path, tiny_model_dir, pairs_dir, config, 2, reference),
        "--accelerate-config",
        config,
        "--num-processes",
        "2",
    )
    assert run.stdout.count("model written to") == 1
    one, two = _results(tmp_path / "one"), _results(tmp_path / config)
    assert two["global_step"] == one["global_step"]
    assert two["best_eval_loss"] == pytest.approx(one["best_eval_loss"], rel=0.02)
    assert "- num_devices: 2" in (tmp_path / config / "README.md").read_text()
