"""The console script: every subcommand has --help; a stage that has not landed exits 2 in one line."""

import importlib
import subprocess
import sys

import pytest

from starchat.cli import STAGES, main


@pytest.mark.parametrize("name", [s[0] for s in STAGES])
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: starchat " + name)


def _landed(module: str) -> bool:
    try:
        importlib.import_module(f"starchat.cli.{module}")
        return True
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("name, module", [(s[0], s[1]) for s in STAGES if not _landed(s[1])])
def test_unlanded_subcommand_says_so_and_exits_2(name, module, capsys):
    assert main([name]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has not landed yet" in err


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "starchat", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("starchat ")


def test_building_the_parser_imports_no_heavy_library():
    code = ("import sys, starchat.cli; starchat.cli.build_parser(); "
            "print(any(m in sys.modules for m in ('torch', 'transformers', 'datasets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
