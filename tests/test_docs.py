"""The documentation site: `mkdocs build --strict` passes, catches a broken anchor, and the benchmark table reads
bench/results/ (a bad file is one line naming it)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("mkdocs") is None:  # the dev extras install it; CI must not skip silently
    if os.environ.get("CI"):
        raise RuntimeError("mkdocs is not installed: pip install -e '.[dev]' (tests/test_docs.py)")
    pytest.skip("mkdocs is not installed (pip install -e '.[dev]')", allow_module_level=True)


def _build(tmp_path: Path, docs_dir: Path | None = None) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of the repository's mkdocs.yml into tmp_path (optionally from another docs dir)."""
    code = (
        "import logging, sys; from mkdocs.config import load_config; from mkdocs.commands.build import build; "
        "logging.basicConfig(level=logging.WARNING); "  # the mkdocs CLI would print its warnings this way
        "kw = {'docs_dir': sys.argv[2]} if len(sys.argv) > 2 else {}; "
        "build(load_config('mkdocs.yml', site_dir=sys.argv[1], strict=True, **kw))"
    )
    args = [sys.executable, "-c", code, str(tmp_path / "site")] + ([str(docs_dir)] if docs_dir else [])
    # cwd: the snippets' base path (bench/results/*.json) is relative to the repository root.
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    )


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    run = _build(tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    perf = (tmp_path / "site" / "performance" / "index.html").read_text()
    assert "bench/results/train_bench.json" in perf and "9.08x" in perf  # the table was built from the data
    assert (tmp_path / "site" / "reference" / "index.html").read_text().count("new_token_lr_multiplier") >= 1


@pytest.mark.slow
def test_a_broken_anchor_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with open(docs / "install.md", "a") as f:
        f.write("\nSee [the data page](data.md#no-such-section).\n")
    run = _build(tmp_path, docs)
    assert run.returncode != 0
    assert "no-such-section" in run.stderr


@pytest.mark.slow
def test_drafts_in_incoming_are_not_built(tmp_path):
    """Other branches drop drafts into docs/_incoming/; a broken link there must not fail the strict build."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "_incoming").mkdir(exist_ok=True)
    (docs / "_incoming" / "draft.md").write_text("# Draft\n\nSee [nothing](nowhere.md#nothing).\n")
    run = _build(tmp_path, docs)
    assert run.returncode == 0, run.stderr[-4000:]
    assert not (tmp_path / "site" / "_incoming").exists()


def _results_table():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "bench" / "results_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_benchmark_summary_names_a_script_that_exists():
    summaries, _ = _results_table().load()
    assert summaries
    for name, d in summaries:
        script = d["benchmark"].split()[0]
        if script.startswith("bench/"):
            assert (ROOT / script).is_file(), f"bench/results/{name}: {script} does not exist"


def test_an_unreadable_results_file_is_one_line_naming_it(tmp_path):
    table = _results_table()
    (tmp_path / "good.json").write_text(
        json.dumps(
            {"benchmark": "bench/x.py", "anchor": "a", "headline": "2x", "target": None, "met": None, "date": None}
        )
    )
    (tmp_path / "broken.json").write_text('{"benchmark": ')
    with pytest.raises(ValueError, match=r"broken\.json: not readable JSON .*fix or delete the file"):
        table.table(tmp_path)
    (tmp_path / "broken.json").write_text('{"steps": {}}')  # a script's raw output: listed, not tabled
    out = table.table(tmp_path)
    assert "| `bench/x.py` | a | 2x |" in out and "`bench/results/broken.json`" in out.splitlines()[-1]


def _documented_commands() -> list[tuple[str, str]]:
    """(where, command line) for every `starchat ...` in README.md and the docs: code blocks and inline code."""
    import re

    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if "_incoming" in page.parts:
            continue
        text = page.read_text(encoding="utf-8")
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
        lines = [ln for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
        prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
        lines += re.findall(r"`((?:\.venv/bin/)?starchat [^`\n]*)`", prose)
        for line in lines:
            line = re.split(r"(?:^|\s)#\s", line)[0]  # a comment
            for m in re.finditer(r"(?:^|[\s|;(])(?:\.venv/bin/)?starchat((?: +[^|;)]*)?)", line):
                found.append((page.relative_to(ROOT).as_posix(), "starchat" + m.group(1)))
    return found


def test_every_documented_command_and_option_exists():
    """Each `starchat CMD [SUB] --option` in README.md and docs/ is a real subcommand and a real option of it
    (for `train`: a real recipe key or shorthand)."""
    import shlex

    from starchat.cli import build_parser
    from starchat.cli.train import ALIASES
    from starchat.train.config import field_docs

    recipe_keys = {k for k, *_ in field_docs()} | set(ALIASES) | {"section.key"}
    wrong, checked = [], 0
    for where, line in _documented_commands():
        try:
            words = shlex.split(line)[1:]
        except ValueError:
            words = line.split()[1:]
        parser, path = build_parser(), ["starchat"]
        while parser._subparsers is not None and words and not words[0].startswith("-"):
            choices = parser._subparsers._group_actions[0].choices
            if words[0] not in choices:
                if words[0] not in ("COMMAND", "..."):  # a placeholder in prose
                    wrong.append(f"{where}: `{line}`: no command {' '.join(path + words[:1])!r}")
                parser = None
                break
            path.append(words.pop(0))
            parser = choices[path[-1]]
        if parser is None or len(path) == 1:
            continue
        checked += 1
        for w in words:
            opt = w.strip("[]").split("=")[0]
            if not opt.startswith("--") or opt == "--":
                continue
            if opt in parser._option_string_actions:
                continue
            key = opt[2:].replace("-", "_") if "." not in opt else opt[2:]
            if path[1] == "train" and key in recipe_keys:
                continue
            wrong.append(f"{where}: `{line}`: {' '.join(path)} has no option {opt}")
    assert checked > 50, f"only {checked} documented commands found: the extraction is broken"
    assert not wrong, "\n".join(wrong)
