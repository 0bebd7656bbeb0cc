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
