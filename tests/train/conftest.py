"""Fixtures for the training tests: small dialogue and preference DatasetDicts and tiny-run configs."""

from __future__ import annotations

import pytest


def _dialogues(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 7 + 1, i % 5 + 2
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"How do I add {a} and {b} in Python?"},
                    {"role": "assistant", "content": f"Use the + operator: `{a} + {b}` gives {a + b}."},
                ]
            }
        )
    return rows


def save_splits(out, train: list[dict], test: list[dict]):
    """A DatasetDict (splits train and test) written with save_to_disk, as `starchat data build` does."""
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)}
    ).save_to_disk(str(out))
    return out


@pytest.fixture(scope="session")
def dialogue_dir(tmp_path_factory):
    """A `starchat data build`-shaped DatasetDict on disk: train (48 dialogues) and test (8)."""
    return save_splits(tmp_path_factory.mktemp("dialogues") / "ds", _dialogues(48), _dialogues(8, offset=100))


def tiny_run_overrides(model_dir, dataset_dir, tmp_path) -> dict:
    """Overrides for a seconds-long full fine-tuning run of the tiny GPT-BigCode on CPU."""
    return {
        "model.name_or_path": str(model_dir),
        "data.dataset": str(dataset_dir),
        "data.max_length": 64,
        "data.block_size": 128,
        "training.output_dir": str(tmp_path / "run"),
        "training.num_train_epochs": 2,
        "training.per_device_train_batch_size": 4,
        "training.per_device_eval_batch_size": 4,
        "training.learning_rate": 3e-3,
        "training.warmup_ratio": 0.0,
        "training.logging_steps": 1,
        "training.use_cpu": True,
        "training.disable_tqdm": True,
        "training.save_total_limit": 3,
    }


@pytest.fixture(scope="session")
def make_overrides(tiny_model_dir, dialogue_dir):
    """A function tmp_dir -> overrides for a tiny run writing into tmp_dir/run."""
    return lambda tmp: tiny_run_overrides(tiny_model_dir, dialogue_dir, tmp)


@pytest.fixture
def tiny_overrides(make_overrides, tmp_path):
    return make_overrides(tmp_path)


def _pairs(n: int, offset: int = 0) -> list[dict]:
    """Preference rows (see `starchat.data.preference`): the right sum is chosen, a wrong one rejected;
    extra columns too."""
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 7 + 1, i % 5 + 2
        prompt = [{"role": "user", "content": f"What is {a} + {b} in Python?"}]
        if i % 3 == 0:  # some prompts carry a system message and an earlier exchange
            prompt = [
                {"role": "system", "content": "You are a coding assistant."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
            ] + prompt
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": f"`{a} + {b}` gives {a + b}."}],
                "rejected": [{"role": "assistant", "content": f"`{a} + {b}` gives {a * b + 1}, I think."}],
                "chosen_score": 1.0,
                "rejected_score": 0.0,
            }
        )
    return rows


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory):
    """A preference DatasetDict on disk: train (24 pairs) and test (8), as `starchat data pairs` writes it."""
    return save_splits(tmp_path_factory.mktemp("pairs") / "ds", _pairs(24), _pairs(8, offset=100))


def tiny_dpo_overrides(model_dir, pairs, tmp_path) -> dict:
    """Overrides for a seconds-long DPO run of the tiny GPT-BigCode on CPU."""
    return {
        "method": "dpo",
        "model.name_or_path": str(model_dir),
        "data.dataset": str(pairs),
        "dpo.beta": 0.1,
        "dpo.max_length": 128,
        "dpo.max_prompt_length": 96,
        "training.output_dir": str(tmp_path / "dpo-run"),
        "training.num_train_epochs": 2,
        "training.per_device_train_batch_size": 4,
        "training.per_device_eval_batch_size": 4,
        "training.learning_rate": 1e-3,
        "training.warmup_ratio": 0.0,
        "training.lr_scheduler_type": "constant",
        "training.logging_steps": 1,
        "training.use_cpu": True,
        "training.disable_tqdm": True,
        "training.save_total_limit": 3,
    }


@pytest.fixture(scope="session")
def make_dpo_overrides(tiny_model_dir, pairs_dir):
    """A function tmp_dir -> overrides for a tiny DPO run writing into tmp_dir/dpo-run."""
    return lambda tmp: tiny_dpo_overrides(tiny_model_dir, pairs_dir, tmp)
