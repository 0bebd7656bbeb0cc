"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and catch an import up a layer or a cycle."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: pip install -e '.[dev]' (import-linter)")
    # PYTHONPATH first: the contracts are checked on this checkout, not on whatever starchat is installed.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_hold():
    out = _lint(ROOT / "src")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        ("data/build.py", "from starchat.train import config", "one-way layers across packages BROKEN"),
        ("inference/params.py", "from starchat.server import settings", "one-way layers across packages BROKEN"),
        (
            "data/records.py",
            "from starchat.data import readers",
            "no import cycles among the modules of any package BROKEN",
        ),
    ],
)
def test_an_import_against_the_contracts_breaks_them(tmp_path, module, line, broken):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "starchat", src / "starchat", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "starchat" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    out = _lint(src)
    assert out.returncode != 0 and broken in out.stdout, out.stdout[-3000:]


def test_every_package_and_top_level_module_has_a_layer():
    """A module added at the top of the package without a layer would be checked by nothing."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in cfg if c["id"] == "layers")["layers"]
    named = {m.strip().removeprefix("starchat.") for layer in layers for m in layer.split("|")}
    src = ROOT / "src" / "starchat"
    found = {p.stem for p in src.glob("*.py") if not p.stem.startswith("__")}
    found |= {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}
    assert found - named == set()
