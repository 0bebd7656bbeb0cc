"""End to end with the real engine and the offline default model (runs once the inference stage is installed)."""

import json

import pytest


@pytest.mark.slow
def test_default_model_prefilled_run_writes_the_report(tmp_path):
    pytest.importorskip("starchat.inference")
    from starchat.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "humaneval",
                "--limit",
                "1",
                "--max-new-tokens",
                "24",
                "--prefill",
                "--temperature",
                "0",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 1 and summary["generation"]["samples"] == 1
    row = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert row["raw"].startswith("```python\n" + row["prompt"]) and row["status"] in (
        "passed",
        "failed",
        "load_error",
        "crashed",
        "timeout",
    )
    assert (out / "report.md").read_text().startswith("# HumanEval: default")
