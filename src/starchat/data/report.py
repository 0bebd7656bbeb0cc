"""The statistics table that `starchat data build` prints (the same numbers as stats.json)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def stats_table(stats: dict) -> Table:
    reasons = sorted(stats["dropped"])
    t = Table(title="starchat data build", show_footer=True)
    t.add_column("source", footer="total")
    cols = [("records", "records"), ("invalid", "invalid"), ("read", "dialogues"), ("kept", "kept"),
            ("train", "train"), ("test", "test")]
    totals = {}
    for key, _ in cols:
        totals[key] = sum(s.get(key, 0) for s in stats["sources"].values())
    for key, title in cols:
        t.add_column(title, justify="right", footer=str(totals[key]))
    for r in reasons:
        t.add_column(r.replace("_", " "), justify="right", footer=str(stats["dropped"][r]))
    for name, s in stats["sources"].items():
        t.add_row(_short(name, s["input"]), *[str(s.get(k, 0)) for k, _ in cols], *[str(s["dropped"].get(r, 0)) for r in reasons])
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
        t.add_row(split, str(s["dialogues"]), str(s["kept"]), str(s["tokens"]), str(s["trained_tokens"]),
                  str(s["truncated_tokens"]), str(sum(s["dropped"].values())), str(p.get("rows", "-")),
                  f"{p['packing_efficiency']:.1%}" if p else "-")
    return t


def print_stats(stats: dict, console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # logs and pipes: wide enough that no column is cut
    console.print(stats_table(stats))
    if "tokenized" in stats:
        console.print(token_table(stats["tokenized"]))
