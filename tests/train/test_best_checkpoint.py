"""The run ends with the checkpoint of lowest validation loss, not the last one (StarChat Beta's best was epoch 2 of 6)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from starchat.train import load_config, train

pytestmark = pytest.mark.slow


def _rows(op: str, sym: str, fn, n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 7 + 1, i % 5 + 2
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"How do I {op} {a} and {b} in Python?"},
                    {"role": "assistant", "content": f"Use the {sym} operator: `{a} {sym} {b}` gives {fn(a, b)}."},
                ]
            }
        )
    return rows


@pytest.fixture(scope="module")
def overtrained(make_overrides, tmp_path_factory):
    """A run whose validation loss rises again after its minimum, as over-training did for StarChat Beta:
    train on additions, validate on multiplications, with a constant, too-high learning rate."""
    import datasets

    tmp = tmp_path_factory.mktemp("best")
    ds = tmp / "ds"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(_rows("add", "+", lambda a, b: a + b, 16, 0)),
            "test": datasets.Dataset.from_list(_rows("multiply", "*", lambda a, b: a * b, 8, 100)),
        }
    ).save_to_disk(str(ds))
    over = make_overrides(tmp)
    over.update(
        {
            "data.dataset": str(ds),
            "training.num_train_epochs": 8,
            "training.learning_rate": 1e-2,
            "training.lr_scheduler_type": "constant",
            "training.save_total_limit": 2,
        }
    )
    out = train(load_config(None, over))
    res = json.loads((out / "trainer_results.json").read_text())
    evals = [(e["step"], e["eval_loss"]) for e in res["log_history"] if "eval_loss" in e]
    best_step = min(evals, key=lambda x: x[1])[0]
    assert best_step != evals[-1][0], f"precondition: the validation loss must rise after its minimum: {evals}"
    return over, out, res, best_step


def test_final_model_is_the_best_checkpoint(overtrained):
    _, out, res, best_step = overtrained
    assert res["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    final, best = load_file(out / "model.safetensors"), load_file(f"{res['best_checkpoint']}/model.safetensors")
    for name, t in best.items():
        assert (final[name] - t).abs().max().item() == 0, name
    assert f"- Loss: {res['best_eval_loss']:.4f}" in (out / "README.md").read_text()


def test_rerunning_the_finished_command_keeps_the_best_model(overtrained):
    over, out, res, _ = overtrained
    first = load_file(out / "model.safetensors")
    again = train(load_config(None, over))  # resumes at the last checkpoint, trains nothing, reloads the best
    rerun = json.loads((again / "trainer_results.json").read_text())
    assert (rerun["global_step"], rerun["best_eval_loss"]) == (res["global_step"], res["best_eval_loss"])
    second = load_file(again / "model.safetensors")
    for name, t in first.items():
        assert (second[name] - t).abs().max().item() == 0, name
