"""The benchmark results table: read bench/results/*.json and render one markdown row per benchmark.

Used as a MkDocs hook (mkdocs.yml `hooks:`), which puts the table where a page says
`<!-- bench-results-table -->`, and standalone: `python bench/results_table.py` prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MARKER = "<!-- bench-results-table -->"
# Files without these keys are a script's raw output (infer.json, endpoint.json, gpu_check.json): listed, not tabled.
REQUIRED = ("benchmark", "anchor", "headline", "target", "met", "date")


def load(results: Path = RESULTS) -> tuple[list[tuple[str, dict]], list[str]]:
    """(name, summary) for every summary file, sorted by name, and the names of the raw output files."""
    summaries, raw = [], []
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not readable JSON ({e}); fix or delete the file") from None
        if isinstance(data, dict) and all(k in data for k in REQUIRED):
            summaries.append((path.name, data))
        else:
            raw.append(path.name)
    return summaries, raw


def _cell(value) -> str:
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(results: Path = RESULTS) -> str:
    """The markdown table: benchmark, anchor, result, target, met, date, file."""
    summaries, raw = load(results)
    met = {True: "met", False: "**not met**", None: "-"}
    rows = ["| benchmark | anchor | result | target | | measured | data |", "|---|---|---|---|---|---|---|"]
    for name, d in summaries:
        result = d["headline"] if d["headline"] is not None else "not measured yet"
        rows.append(
            f"| `{_cell(d['benchmark'])}` | {_cell(d['anchor'])} | {_cell(result)} | {_cell(d['target'])} "
            f"| {met.get(d['met'], '-')} | {_cell(d['date'] or 'earlier run')} | `bench/results/{name}` |"
        )
    if raw:
        rows.append("")
        rows.append("Raw output of the last local runs: " + ", ".join(f"`bench/results/{n}`" for n in raw) + ".")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_) -> str:
    """MkDocs hook: replace the marker with the table, built from the files as they are now."""
    return markdown.replace(MARKER, table()) if MARKER in markdown else markdown


if __name__ == "__main__":
    print(table())
