"""Fixtures for the eval tests: HumanEval problems and sample files."""

import pytest
from eval_fakes import write_samples


@pytest.fixture(scope="session")
def problems():
    from starchat.eval.programs import load_problems

    return load_problems()


@pytest.fixture
def canonical_samples(tmp_path, problems):
    return write_samples(
        tmp_path / "canonical.jsonl",
        [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()],
    )
