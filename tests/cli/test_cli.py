"""The console script: every subcommand has --help; a stage that has not landed exits 2 in one line."""

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


def test_a_stage_without_its_module_says_so_and_exits_2(monkeypatch, capsys):
    import starchat.cli as cli

    monkeypatch.setattr(cli, "STAGES", cli.STAGES + [("future", "no_such_stage_module", "a stage not landed")])
    assert main(["future"]) == 2
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
