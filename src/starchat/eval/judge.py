"""`starchat eval judge`: answers of N models to a prompt set, judged pairwise in both orders, cached and resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from starchat.errors import StarchatError
from starchat.eval import judge_prompts as jp
from starchat.eval import judge_report
from starchat.eval.prompting import prefill_ids, sampling_params
from starchat.eval.registry import write_summary
from starchat.eval.report import check_run_file
from starchat.fsio import write_text_atomic
from starchat.options import setting

RETRY_MAX_NEW_TOKENS = 32  # the retry asks for the verdict alone


@dataclasses.dataclass
class JudgeConfig:
    """One judge run."""

    output: Path = setting(help="Results directory; a rerun with the same one resumes.", cli=False)
    prompts: str | None = setting(
        None, 'JSONL of {"prompt": ...} (or MT-Bench\'s question.jsonl) (default: the shipped set of coding prompts).'
    )
    limit: int | None = setting(None, "Only the first K prompts (K >= 1; default: all).")
    system: str | None = setting(None, "A system message for the answering models, not the judge (default: none).")
    temperature: float = setting(0.2, "The answers' temperature (the StarChat cards' value); the judge is greedy.")
    max_new_tokens: int = setting(512, "Token limit per answer.")
    judge_max_new_tokens: int = setting(512, "Token limit per judgment: the judge explains, then gives its verdict.")
    batch_size: int = setting(8, "Requests per generate_batch call.")
    seed: int = setting(0, "Seed of the answers' sampling.")
    bootstrap: int = setting(1000, "Resamples for the 95% intervals (0: none).")
    examples: int = setting(3, "Example prompts per pair in report.md.")
    progress: bool = setting(True, "Show progress bars.")


def parse_models(specs: Iterable[str]) -> dict[str, str]:
    """``{label: spec}`` from ``--model`` values: ``NAME=SPEC`` names one, otherwise a label is made from
    the spec (a path's last part, an endpoint's host-port, ``default``)."""
    out: dict[str, str] = {}
    for raw in specs:
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)=(.+)", raw)
        label, spec = (m.group(1), m.group(2)) if m else (model_label(raw), raw)
        if label in out:
            raise StarchatError(
                f"two --model values are both called {label!r} ({out[label]} and {spec}): "
                f"name them, e.g. --model {label}-2={spec}"
            )
        out[label] = spec
    if len(out) < 2:
        raise StarchatError("give at least two --model values to compare (e.g. --model default --model DIR)")
    return out


def model_label(spec: str | None) -> str:
    if spec in (None, "", "default"):
        return "default"
    if spec.startswith(("http://", "https://")):
        u = urlparse(spec)
        return re.sub(r"[^A-Za-z0-9._-]+", "-", u.netloc).strip("-") or "endpoint"
    name = Path(spec.rstrip("/")).name or spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


class JsonlCache:
    """Rows of one JSONL file by key: read back on start (resume), appended and flushed one by one.
    A line cut by an interruption is dropped, with everything after it."""

    def __init__(self, path: Path, key: Callable[[dict], tuple]):
        self.path, self.key = path, key
        self.rows: dict[tuple, dict[str, Any]] = {}
        if path.exists():
            good = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[key(row)] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    break
                good.append(line)
            write_text_atomic(path, "".join(g + "\n" for g in good))
        self._f = path.open("a", encoding="utf-8")

    def get(self, key: tuple) -> dict[str, Any] | None:
        return self.rows.get(key)

    def add(self, row: dict[str, Any]) -> None:
        self.rows[self.key(row)] = row
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _sha(*texts: str) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def run_judge(
    cfg: JudgeConfig, models: dict[str, str], judge: str | None, load: Callable[[str | None], Any]
) -> dict[str, Any]:
    """Answer every prompt with every model, judge each pair of answers in both orders, write the report.

    ``load(spec)`` returns an engine (``starchat.inference.load_engine`` in the CLI); each model is
    loaded in turn and closed before the next, the judge last. Rerunning with the same ``cfg.output``
    reuses every cached answer and verdict; a model may be added to a finished run.
    """
    if len(models) < 2:
        raise StarchatError("the judge needs at least two models")
    if cfg.limit is not None and cfg.limit < 1:
        raise StarchatError(f"--limit {cfg.limit}: give at least 1 prompt, or leave --limit out for all of them")
    if cfg.bootstrap < 0:
        raise StarchatError(
            f"--bootstrap {cfg.bootstrap}: give a number of resamples >= 0 (0: no intervals; 1000 is the default)"
        )
    prompts = jp.load_prompts(cfg.prompts)
    prompts = prompts[: cfg.limit] if cfg.limit else prompts
    identity = {
        "prompts": cfg.prompts or jp.SHIPPED,
        "system": cfg.system,
        "temperature": cfg.temperature,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
        "judge": judge or "default",
        "judge_max_new_tokens": cfg.judge_max_new_tokens,
        "judge_prompt": _sha(jp.JUDGE_TEMPLATE),
    }
    # answers and verdicts in the output are reused only by a run with the same settings
    check_run_file(cfg.output, identity, what="a judge run")
    answers = JsonlCache(cfg.output / "answers.jsonl", lambda r: (r["model"], r["prompt_id"]))
    verdicts = JsonlCache(cfg.output / "verdicts.jsonl", lambda r: (r["prompt_id"], r["first"], r["second"]))
    try:
        for label, spec in models.items():
            _answer(cfg, label, spec, prompts, answers, load)
        _judge_all(cfg, models, judge, prompts, answers, verdicts, load)
    finally:
        answers.close()
        verdicts.close()
    return _write_report(cfg, models, judge, prompts, answers, verdicts)


def _answer(cfg: JudgeConfig, label: str, spec: str, prompts, answers: JsonlCache, load) -> None:
    for p in prompts:
        row = answers.get((label, p["id"]))
        if row is not None and row["spec"] != spec:
            raise StarchatError(
                f"{cfg.output}/answers.jsonl holds answers of {label!r} made by {row['spec']}, "
                f"not {spec}: name this model differently (--model OTHER={spec})"
            )
    todo = [p for p in prompts if answers.get((label, p["id"])) is None]
    if not todo:
        return
    from starchat.eval.humaneval import _progress

    engine = load(spec)
    params = sampling_params(cfg.temperature, cfg.max_new_tokens, [], cfg.seed)
    bar = _progress(len(todo), cfg.progress, f"answers {label}")
    try:
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            requests = [
                ([{"role": "system", "content": cfg.system}] if cfg.system else [])
                + [{"role": "user", "content": p["prompt"]}]
                for p in batch
            ]
            for p, c in zip(batch, engine.generate_batch(requests, params)):
                answers.add(
                    {
                        "model": label,
                        "spec": spec,
                        "prompt_id": p["id"],
                        "answer": c.text,
                        "finish_reason": getattr(c, "finish_reason", None),
                        "completion_tokens": getattr(c, "completion_tokens", None),
                    }
                )
            bar.update(len(batch))
    finally:
        bar.close()
        _close(engine)


def _close(engine) -> None:
    close = getattr(engine, "close", None)
    if callable(close):
        close()


def _judge_all(cfg: JudgeConfig, models, judge, prompts, answers: JsonlCache, verdicts: JsonlCache, load) -> None:
    jobs = []
    for x, y in itertools.combinations(models, 2):
        for p in prompts:
            for first, second in ((x, y), (y, x)):
                a, b = answers.get((first, p["id"]))["answer"], answers.get((second, p["id"]))["answer"]
                done = verdicts.get((p["id"], first, second))
                if done is None or done["answers_sha"] != _sha(a, b):  # an answer was regenerated
                    jobs.append((p, first, second, a, b))
    if not jobs:
        return
    from starchat.eval.humaneval import _progress

    engine = load(judge)
    params = sampling_params(0.0, cfg.judge_max_new_tokens, [], cfg.seed)
    retry_params = sampling_params(0.0, RETRY_MAX_NEW_TOKENS, [], cfg.seed)
    bar = _progress(len(jobs), cfg.progress, "judge")
    try:
        for start in range(0, len(jobs), cfg.batch_size):
            batch = jobs[start : start + cfg.batch_size]
            fitted = [_fit(engine, p["prompt"], a, b, cfg.judge_max_new_tokens) for p, _, _, a, b in batch]
            replies = engine.generate_batch([m for m, _ in fitted], params)
            rows = [_verdict_row(job, judge, c.text, cut) for job, c, (_, cut) in zip(batch, replies, fitted)]
            again = [i for i, r in enumerate(rows) if r["verdict"] is None]
            if again:  # retried once, as a follow-up turn asking for the verdict alone
                for i, text in zip(
                    again,
                    _retry(engine, [jp.retry_messages(fitted[i][0], rows[i]["raw"]) for i in again], retry_params),
                ):
                    rows[i].update(retried=True, retry_raw=text)
                    _set_verdict(rows[i], jp.parse_verdict(text))
            for r in rows:
                verdicts.add(r)
            bar.update(len(batch))
    finally:
        bar.close()
        _close(engine)


def _retry(engine, requests: list, params) -> list[str]:
    """The retries' replies. Where the judge is local, its answer is prefilled with ``RETRY_PREFILL``
    ("My final verdict: [[") so that even a small judge only has to write the label; endpoints (whose
    chat format is the server's) get the plain follow-up. One retry that fails (say, no longer fits the
    judge's context) is recorded as its error and counts as unparsed; the others still run."""
    plans = [_prefilled(engine, msgs) for msgs in requests]
    try:
        return [pre + c.text for (_, pre), c in zip(plans, engine.generate_batch([r for r, _ in plans], params))]
    except StarchatError:
        pass
    out = []
    for msgs, (req, pre) in zip(requests, plans):
        try:
            out.append(pre + engine.generate_batch([req], params)[0].text)
        except StarchatError as e:
            text = f"(retry failed: {e})"
            if pre:  # the prefilled request failed: the plain follow-up may still work
                try:
                    text = engine.generate_batch([msgs], params)[0].text
                except StarchatError as e2:
                    text = f"(retry failed: {e2})"
            out.append(text)
    return out


def _prefilled(engine, msgs: list[dict[str, str]]) -> tuple[Any, str]:
    """(request, prefilled text): token ids with the verdict's start, or the messages when that is not possible."""
    try:
        ids = engine.encode_prompt(msgs, add_generation_prompt=True)
        return list(ids) + prefill_ids(engine, msgs, jp.RETRY_PREFILL), jp.RETRY_PREFILL
    except (StarchatError, NotImplementedError, AttributeError, TypeError):
        return msgs, ""


def _verdict_row(job, judge, raw: str, cut: bool) -> dict[str, Any]:
    p, first, second, a, b = job
    row = {
        "prompt_id": p["id"],
        "first": first,
        "second": second,
        "judge": judge or "default",
        "raw": raw,
        "retried": False,
        "retry_raw": None,
        "answers_cut": cut,
        "answers_sha": _sha(a, b),
    }
    _set_verdict(row, jp.parse_verdict(raw))
    return row


def _set_verdict(row: dict[str, Any], verdict: str | None) -> None:
    """``verdict``: the position the judge chose (A = shown first); ``winner``: the model, ``tie`` or None."""
    row["verdict"] = verdict
    row["winner"] = {"A": row["first"], "B": row["second"], "C": "tie"}.get(verdict) if verdict else None


def _fit(engine, question: str, a: str, b: str, max_new: int) -> tuple[list[dict[str, str]], bool]:
    """The judge request, both answers cut alike until the judge's context keeps room for its reply
    (``max_new`` tokens, or a quarter of the context if that is less, but at least 64). Engines that
    cannot count tokens locally (endpoints) get it whole; the server says if it does not fit."""
    msgs = jp.judge_messages(question, a, b)
    ctx = getattr(engine, "context_length", None)
    if not ctx or not hasattr(engine, "prompt_ids"):
        return msgs, False
    budget = ctx - min(max_new, max(64, ctx // 4))
    try:
        n = len(engine.prompt_ids(msgs))
        if n <= budget:
            return msgs, False
        base = len(engine.prompt_ids(jp.judge_messages(question, "", "")))  # the request without answers
    except (StarchatError, NotImplementedError, AttributeError, TypeError):
        return msgs, False
    if base > budget:
        raise StarchatError(
            f"the judge's request is {base} tokens before any answer, but the judge "
            f"{getattr(engine, 'model_name', '')}'s context is {ctx} tokens with {ctx - budget} kept "
            "for its reply: use a judge with a longer context"
        )
    keep = max(len(a), len(b))
    for _ in range(6):  # answer tokens scale about with their characters: shrink by the excess, then check
        keep = max(0, int(keep * max(0.0, budget - base) / max(1, n - base) * 0.95))
        msgs = jp.judge_messages(question, _cut(a, keep), _cut(b, keep))
        n = len(engine.prompt_ids(msgs))
        if n <= budget or keep == 0:
            break
    return msgs, True


def _cut(text: str, keep: int) -> str:
    return text if len(text) <= keep else text[:keep] + "\n[... cut to fit the judge's context]"


def _write_report(cfg, models, judge, prompts, answers: JsonlCache, verdicts: JsonlCache) -> dict[str, Any]:
    summary = judge_report.summarize(list(models), prompts, verdicts.rows, n_boot=cfg.bootstrap, seed=cfg.seed)
    summary.update(
        models=models,
        judge=judge or "default",
        prompts=cfg.prompts or jp.SHIPPED,
        num_prompts=len(prompts),
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_summary(cfg.output / "summary.json", summary)
    md = judge_report.markdown(summary, prompts, answers.rows, verdicts.rows, cfg.examples)
    write_text_atomic(cfg.output / "report.md", md)
    return summary
