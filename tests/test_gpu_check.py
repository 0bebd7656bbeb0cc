"""bench/gpu_check.sh --cpu: every step of the prepared GPU check sets up on the CPU, so it does not rot between
the times a GPU is lent. CUDA-only steps must say why they were skipped; the others must give figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_in_cpu_mode(tmp_path):
    out = tmp_path / "gpu_check_cpu.json"
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    res = json.loads(out.read_text())
    steps = res["steps"]
    assert res["mode"] == "cpu" and set(steps) == {
        "sft_bf16",
        "zero3_resize_resume",
        "qlora_paged_adamw_8bit",
        "dpo_bf16",
        "serve_vllm",
        "eval_humaneval",
        "pairs_overlap",
    }
    assert not [n for n, s in steps.items() if "error" in s]
    assert steps["sft_bf16"]["tokens_per_s"] > 0 and steps["sft_bf16"]["timed_steps"] >= 1
    for name in ("zero3_resize_resume", "qlora_paged_adamw_8bit", "dpo_bf16"):
        assert steps[name]["skipped"]  # a reason, not an empty string
    serve = steps["serve_vllm"]
    assert serve["backend"] == "transformers" and serve["stream_equals_full"] and serve["cancelled_stream_freed"]
    assert serve["stop_cuts_at_first_occurrence"] in (True, None) and serve["completion_tokens"] > 0
    assert "skipped" in steps["eval_humaneval"]["vllm"]
    assert steps["eval_humaneval"]["transformers"]["problems_per_minute"] > 0
    pairs = steps["pairs_overlap"]
    assert pairs["prompts"] == 2 and pairs["replies_per_minute_overlapped"] > 0 and 0 < pairs["ratio"]
