"""Fixtures for the training tests: a small dialogue DatasetDict and a tiny-run config."""

from __future__ import annotations

import pytest


def _dialogues(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 7 + 1, i % 5 + 2
        rows.append({"messages": [
            {"role": "user", "content": f"How do I add {a} and {b} in Python?"},
            {"role": "assistant", "content": f"Use the + operator: `{a} + {b}` gives {a + b}."},
        ]})
    return rows


@pytest.fixture(scope="session")
def dialogue_dir(tmp_path_factory):
    """A `starchat data build`-shaped DatasetDict on disk: train (48 dialogues) and test (8)."""
    import datasets

    out = tmp_path_factory.mktemp("dialogues") / "ds"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_dialogues(48)),
                          "test": datasets.Dataset.from_list(_dialogues(8, offset=100))}).save_to_disk(str(out))
    return out


def tiny_run_overrides(model_dir, dataset_dir, tmp_path) -> dict:
    """Overrides for a seconds-long full fine-tuning run of the tiny GPT-BigCode on CPU."""
    return {
        "model.name_or_path": str(model_dir),
        "data.dataset": str(dataset_dir),
        "data.max_length": 64, "data.block_size": 128,
        "training.output_dir": str(tmp_path / "run"),
        "training.num_train_epochs": 2, "training.per_device_train_batch_size": 4,
        "training.per_device_eval_batch_size": 4,
        "training.learning_rate": 3e-3, "training.warmup_ratio": 0.0,
        "training.logging_steps": 1, "training.use_cpu": True, "training.disable_tqdm": True,
        "training.save_total_limit": 3,
    }


@pytest.fixture(scope="session")
def make_overrides(tiny_model_dir, dialogue_dir):
    """A function tmp_dir -> overrides for a tiny run writing into tmp_dir/run."""
    return lambda tmp: tiny_run_overrides(tiny_model_dir, dialogue_dir, tmp)


@pytest.fixture
def tiny_overrides(make_overrides, tmp_path):
    return make_overrides(tmp_path)
