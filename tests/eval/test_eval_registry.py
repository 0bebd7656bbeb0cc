"""The eval registry: `starchat eval NAME` for each entry, and the summary.json contract `eval compare` reads."""

import json
import sys
import types
from pathlib import Path

import pytest

from starchat.cli import main
from starchat.dotted import resolve
from starchat.errors import StarchatError
from starchat.eval import registry


def _register_wordcount(ev, name, help_text):
    def run(args):
        registry.write_summary(
            Path(args.output) / "summary.json",
            {"kind": name, "name": args.text, "metrics": {"words": len(args.text.split())}},
        )
        return 0

    p = ev.add_parser(name, help=help_text)
    p.add_argument("--text", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=run)


@pytest.fixture
def wordcount_eval(monkeypatch):
    """A new eval added the documented way: a module with its command, and one registry line."""
    mod = types.ModuleType("wordcount_eval")
    mod.register = _register_wordcount
    monkeypatch.setitem(sys.modules, "wordcount_eval", mod)
    monkeypatch.setitem(
        registry.EVALS,
        "wordcount",
        registry.Eval("wordcount", "count words", "wordcount_eval:register", "wordcount_eval:register"),
    )


def test_a_new_eval_is_one_registry_line_and_compares_with_the_others(wordcount_eval, tmp_path, capsys):
    for text in ("one two", "one two three"):
        (tmp_path / text.replace(" ", "-")).mkdir()
        assert main(["eval", "wordcount", "--text", text, "--output", str(tmp_path / text.replace(" ", "-"))]) == 0
    assert main(["eval", "compare", str(tmp_path / "one-two"), str(tmp_path / "one-two-three")]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    assert ["kind", "wordcount", "wordcount"] in lines
    assert ["words", "2", "3", "(+1)"] in lines, lines


def test_every_registered_eval_is_a_subcommand_and_compare_states_the_contract(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    listed = capsys.readouterr().out.split()
    assert all(name in listed for name in registry.EVALS)
    with pytest.raises(SystemExit):
        main(["eval", "compare", "--help"])
    assert " ".join(registry.CONTRACT.split()) in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "summary, field",
    [
        ({"metrics": {"a": 1.0}}, "'kind'"),
        ({"kind": "x", "metrics": {"a": "high"}}, "'metrics'"),
        ({"kind": "x"}, "'metrics'"),
    ],
)
def test_a_summary_that_breaks_the_contract_is_not_written(tmp_path, summary, field):
    path = tmp_path / "summary.json"
    with pytest.raises(StarchatError, match=f"summary.json: field {field}"):
        registry.write_summary(path, summary)
    assert not path.exists()


def test_loss_output_keeps_the_contract(tmp_path):
    """`eval loss --output` writes through the registry's writer: compare reads it as kind loss."""
    from starchat.eval.report import load_summary

    out = tmp_path / "loss.json"
    registry.write_summary(out, {"kind": "loss", "metrics": {"loss": 1.0}, "loss": 1.0})
    assert load_summary(out)["kind"] == "loss" and json.loads(out.read_text())["metrics"] == {"loss": 1.0}


@pytest.mark.parametrize("name", list(registry.EVALS))
def test_every_builtin_entry_names_code_that_exists(name):
    e = registry.EVALS[name]
    assert callable(resolve(e.runner)) and callable(resolve(e.command))
