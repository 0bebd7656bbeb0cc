"""The console script: every subcommand has --help, runs as a module, and builds its parser without heavy imports."""

import subprocess
import sys

import pytest

from starchat.cli import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: starchat " + name)


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "starchat", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("starchat ")


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys, starchat.cli; starchat.cli.build_parser(); "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'datasets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
