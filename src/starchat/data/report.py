"""The statistics table that `starchat data build` prints (the same numbers as stats.json)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def stats_table(stats: dict) -> Table:
    reasons = sorted(stats["dropped"])
    t = Table(title="starchat data build", show_footer=True)
    t.add_column("source", footer="total")
    cols = [
        ("records", "records"),
        ("invalid", "invalid"),
        ("read", "dialogues"),
        ("kept", "kept"),
        ("train", "train"),
        ("test", "test"),
    ]
    totals = {}
    for key, _ in cols:
        totals[key] = sum(s.get(key, 0) for s in stats["sources"].values())
    for key, title in cols:
        t.add_column(title, justify="right", footer=str(totals[key]))
    for r in reasons:
        t.add_column(r.replace("_", " "), justify="right", footer=str(stats["dropped"][r]))
    for name, s in stats["sources"].items():
        t.add_row(
            _short(name, s["input"]),
            *[str(s.get(k, 0)) for k, _ in cols],
            *[str(s["dropped"].get(r, 0)) for r in reasons],
        )
    return t


def _short(name: str, source: str) -> str:
    """A file of a folder source is shown relative to that folder."""
    from pathlib import Path

    try:
        rel = Path(name).relative_to(source)
        return str(rel) if str(rel) != "." else Path(name).name
    except ValueError:
        return name


def token_table(tok_stats: dict) -> Table:
    t = Table(title="tokenized")
    for c in ("split", "dialogues", "kept", "tokens", "trained", "truncated tokens", "dropped", "rows", "packing"):
        t.add_column(c, justify="right")
    for split, s in tok_stats.items():
        p = s.get("packing") or {}
        t.add_row(
            split,
            str(s["dialogues"]),
            str(s["kept"]),
            str(s["tokens"]),
            str(s["trained_tokens"]),
            str(s["truncated_tokens"]),
            str(sum(s["dropped"].values())),
            str(p.get("rows", "-")),
            f"{p['packing_efficiency']:.1%}" if p else "-",
        )
    return t


def print_stats(stats: dict, console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # logs and pipes: wide enough that no column is cut
    console.print(stats_table(stats))
    if "tokenized" in stats:
        console.print(token_table(stats["tokenized"]))


def pairs_table(stats: dict) -> Table:
    """`starchat data pairs`: prompts with a pair and why the others have none, what the replies showed,
    and the scoring rule."""
    t = Table(title="starchat data pairs", caption=stats["scoring_rule"])
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("prompts", str(stats["prompts"]))
    t.add_row("prompts with a pair", str(stats["prompts_with_pair"]))
    for why, n in sorted(stats["no_pair"].items()):
        t.add_row(f"  no pair: {why.replace('_', ' ')}", str(n))
    c = stats["criteria"]
    labels = {
        "replies": "replies",
        "tests_passed": "  tests passed",
        "tests_failed": "  tests failed",
        "no_tests": "  no tests",
        "syntax": "  Python that does not compile",
        "high": "  bandit high",
        "medium": "  bandit medium",
        "low": "  bandit low",
        "unclosed": "  code fence left open",
        "url": "  unverified links",
        "cut_off": "  cut off at the token limit",
        "empty": "  empty",
    }
    for key, label in labels.items():
        t.add_row(label, str(c.get(key, 0)))
    for key in ("train", "test"):
        t.add_row(f"{key} pairs", str(stats.get("splits", {}).get(key, 0)))
    g = stats["generation"]
    if g.get("replies_per_minute"):
        t.add_row("replies generated+scored per minute", f"{g['replies_per_minute']}")
    return t


def print_pairs_stats(stats: dict, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 120)
    console.print(pairs_table(stats))
