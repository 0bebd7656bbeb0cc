"""What a training run says: data kept and dropped, readable log lines, the end figures and the end-token warning."""

from __future__ import annotations

import datasets
import pytest

from starchat.cli import main
from starchat.train.config import load_config


def _dialogue(i: int, long: bool) -> dict:
    reply = f"Use `sum` on the list; it gives {i}." + (
        " It walks the list once and adds each item." * 8 if long else ""
    )
    return {
        "messages": [
            {"role": "user", "content": f"How do I add up list number {i}?"},
            {"role": "assistant", "content": reply},
        ]
    }


@pytest.fixture
def mixed_lengths(tmp_path):
    """48 training dialogues, every third one long; 8 short test dialogues."""
    out = tmp_path / "mixed"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([_dialogue(i, i % 3 == 0) for i in range(48)]),
            "test": datasets.Dataset.from_list([_dialogue(100 + i, False) for i in range(8)]),
        }
    ).save_to_disk(str(out))
    return out


def _cfg(model_dir, dataset, tmp_path, **extra):
    return load_config(
        None,
        {
            "model.name_or_path": str(model_dir),
            "data.dataset": str(dataset),
            "training.output_dir": str(tmp_path / "run"),
            **extra,
        },
    )


def test_a_run_that_leaves_most_of_the_data_out_says_so_with_numbers_and_fields(
    tiny_model_dir, mixed_lengths, tmp_path
):
    from transformers import AutoTokenizer

    from starchat.train.console import data_lines, data_warning
    from starchat.train.data import prepare_data

    cfg = _cfg(
        tiny_model_dir,
        mixed_lengths,
        tmp_path,
        **{"data.max_train_samples": 30, "data.max_length": 64, "data.truncation": "drop"},
    )
    stats = prepare_data(cfg.data, AutoTokenizer.from_pretrained(tiny_model_dir)).stats
    warning = data_warning(cfg, stats)
    assert warning.startswith(f"training on 20 of the 48 dialogues in {mixed_lengths} [train] (42%)")
    assert "data.max_train_samples 30 left out 18" in warning
    assert "10 were longer than data.max_length 64 tokens and data.truncation 'drop' skips them" in warning
    assert "raise data.max_train_samples to 48 or remove it" in warning and "raise data.max_length" in warning
    train_line = data_lines(cfg, stats)[0]
    assert train_line.startswith(
        f"train: 48 read from {mixed_lengths} [train], 20 kept (dropped: 18 max samples, 10 too long)"
    )


def test_a_run_that_keeps_its_data_has_no_warning(tiny_model_dir, mixed_lengths, tmp_path):
    from transformers import AutoTokenizer

    from starchat.train.console import data_warning
    from starchat.train.data import prepare_data

    cfg = _cfg(tiny_model_dir, mixed_lengths, tmp_path, **{"data.max_length": 512})
    stats = prepare_data(cfg.data, AutoTokenizer.from_pretrained(tiny_model_dir)).stats
    assert stats["train_tokenize"]["kept"] == 48 and data_warning(cfg, stats) is None


def test_log_lines_are_names_and_numbers():
    from starchat.train.console import log_line

    line = log_line(
        {"loss": 1.23456, "grad_norm": 0.5, "learning_rate": 1e-4, "epoch": 0.5, "num_input_tokens_seen": 12345}, 3, 10
    )
    assert line == "step 3/10  epoch 0.5  loss 1.235  grad norm 0.5  lr 1.00e-04  tokens 12,345"
    line = log_line(
        {
            "eval_loss": 2.0,
            "eval_perplexity": 7.389,
            "eval_end_token_accuracy": 0.4,
            "eval_runtime": 1.2,
            "eval_samples_per_second": 9.0,
            "epoch": 1.0,
        },
        10,
        10,
    )
    assert line == "eval at step 10/10  epoch 1  loss 2  perplexity 7.389  end-token accuracy 0.4"
    line = log_line({"loss": 2.5, "train_runtime": 3.0, "train_tokens_per_second": 812.4, "epoch": 0.25}, 1, 10)
    assert line == "step 1/10  epoch 0.25  loss 2.5  tokens/s 812.4"  # every log carries its speed
    assert log_line({"train_runtime": 3.0, "train_loss": 1.0, "epoch": 1.0}, 10, 10) is None  # the totals


@pytest.mark.parametrize("accuracy, warns", [(0.4, True), (0.85, True), (0.95, False), (None, False)])
def test_the_end_token_warning_follows_the_final_models_accuracy(accuracy, warns):
    from starchat.train.console import end_token_warning

    best = {"eval_loss": 1.0, "step": 5, **({"eval_end_token_accuracy": accuracy} if accuracy is not None else {})}
    later = {"eval_loss": 1.5, "step": 10, "eval_end_token_accuracy": 1.0}  # not the model that was kept
    warning = end_token_warning([{"loss": 2.0, "step": 1}, best, later], best_metric=1.0)
    assert (warning is not None) == warns
    if warns:
        assert f"end-token accuracy {accuracy:.2f}" in warning and "training.new_token_lr_multiplier" in warning


@pytest.mark.slow
def test_a_piped_training_run_says_what_it_does_in_plain_lines(tiny_model_dir, mixed_lengths, tmp_path, capsys):
    argv = [
        "train",
        "/dev/null",
        "--model.name_or_path",
        str(tiny_model_dir),
        "--data.dataset",
        str(mixed_lengths),
        "--training.output_dir",
        str(tmp_path / "run"),
        "--data.max_length",
        "64",
        "--data.truncation",
        "drop",
        "--data.block_size",
        "128",
        "--training.max_steps",
        "2",
        "--training.per_device_train_batch_size",
        "4",
        "--training.logging_steps",
        "1",
        "--training.use_cpu",
        "true",
        "--training.learning_rate",
        "1e-3",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err  # no bar, no colours: stderr is not a terminal here
    assert "WARNING: training on 32 of the 48 dialogues" in err  # every third dialogue is too long
    assert f"train: 48 read from {mixed_lengths} [train], 32 kept (dropped: 16 too long)" in err
    assert "run: 2 steps (" in err and "CPU threads per process" in err
    assert "step 1/2  epoch" in err and "  loss " in err and "{'loss'" not in err
    assert "eval at step 2/2" in err and "done: 2 steps in " in err
    assert "validation (best, step 2): loss " in err


def test_in_a_terminal_a_bar_runs_and_log_lines_print_above_it(tiny_model_dir, tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from starchat.train.console import TrainConsole

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    cfg = _cfg(tiny_model_dir, tmp_path / "ds", tmp_path)
    args = SimpleNamespace(
        world_size=1,
        device="cpu",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        output_dir=str(tmp_path),
        disable_tqdm=False,
    )
    state = SimpleNamespace(
        is_world_process_zero=True, max_steps=4, global_step=0, num_train_epochs=1, log_history=[], best_metric=None
    )
    cb = TrainConsole(cfg, {}, console=console)
    cb.on_train_begin(args, state, None)
    assert cb.progress is not None
    for step in (1, 2):
        state.global_step = step
        cb.on_step_end(args, state, None)
    cb.on_log(args, state, None, logs={"loss": 1.5, "epoch": 0.5})
    assert cb.progress.tasks[0].completed == 2
    state.log_history = [{"loss": 1.5, "step": 2}]
    cb.on_train_end(args, state, None)
    assert cb.progress is None
    text = out.getvalue()
    assert "step 2/4  epoch 0.5  loss 1.5" in text and "done: 2 steps" in text and "\x1b" in text
