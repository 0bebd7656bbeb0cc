"""Test helper: run tests/train/load_probe.py under the venv's transformers 5 and under 4.x, and compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("load_probe.py")
TRANSFORMERS4 = Path(sys.prefix) / "compat" / "transformers4"  # installed by the Makefile


def probe(model_dir: Path, transformers4: bool) -> dict:
    """What a user's script computes with this model, under the venv's transformers or under 4.x."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if transformers4:
        if not (TRANSFORMERS4 / "transformers").is_dir():
            if os.environ.get("CI") == "true":
                pytest.fail(f"{TRANSFORMERS4} is missing: `make test` installs it (tests/train/transformers4.txt)")
            pytest.skip(f"transformers 4.x not installed in {TRANSFORMERS4} (`make test` installs it)")
        env["PYTHONPATH"] = str(TRANSFORMERS4)
    run = subprocess.run(
        [sys.executable, str(PROBE), str(model_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def assert_same_model(model_dir: Path) -> dict:
    new, old = probe(model_dir, transformers4=False), probe(model_dir, transformers4=True)
    assert old["version"].startswith("4.") and new["version"].startswith("5.")
    for key in ("prompt", "ids", "eos", "end_id", "greedy"):
        assert old[key] == new[key], key
    assert max(abs(a - b) for a, b in zip(old["logits"], new["logits"])) < 1e-4
    return new
