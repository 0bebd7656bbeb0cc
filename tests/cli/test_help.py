"""Every command's --help agrees with itself: each option says what it does and its default, no RST markup."""

from __future__ import annotations

import argparse
import re

import pytest

from starchat.cli import build_parser

RST = re.compile(r"``|:(?:func|class|meth|mod|attr|ref|obj|data):`")
BACKENDS = {"auto", "transformers", "llamacpp", "vllm"}


def _parsers():
    """(command path, parser) for the top level and every subcommand, however deep."""
    todo = [("starchat", build_parser())]
    while todo:
        path, parser = todo.pop()
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{path} {name}", sub) for name, sub in action.choices.items()]


def _helps():
    """(command path, option, its help as --help prints it, the action) for every option but -h/--version."""
    for path, parser in _parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            text = " ".join(formatter._expand_help(action).split()) if action.help else ""
            yield path, name, text, action


HELPS = list(_helps())


def test_the_walk_reaches_every_command():
    paths = {p for p, *_ in HELPS}
    assert {"starchat serve", "starchat eval humaneval", "starchat data build", "starchat export gguf"} <= paths


def test_every_option_says_what_it_does():
    missing = [f"{p} {n}" for p, n, text, _ in HELPS if not text]
    assert not missing, f"options without help: {missing}"


def _on_off(action) -> bool:
    return isinstance(action, argparse.BooleanOptionalAction) and isinstance(action.default, bool)


def test_every_optional_value_option_shows_its_default():
    """A store_true flag needs no default; a required option has none to show; --x/--no-x says which is on."""
    missing = [
        f"{p} {n}: {text}"
        for p, n, text, a in HELPS
        if a.option_strings and not a.required and (a.nargs != 0 or _on_off(a)) and "default" not in text.lower()
    ]
    assert not missing, "options whose help does not give the default:\n" + "\n".join(missing)


def test_required_options_do_not_print_a_none_default():
    wrong = [f"{p} {n}" for p, n, text, a in HELPS if a.required and "default: none" in text.lower()]
    assert not wrong, wrong


def test_no_rst_markup_in_help():
    wrong = [f"{p} {n}: {text}" for p, n, text, _ in HELPS if RST.search(text)]
    for path, parser in _parsers():
        if RST.search(f"{parser.description or ''} {parser.epilog or ''}"):
            wrong.append(path)
    assert not wrong, wrong


def test_backends_are_spelled_one_way():
    """Every --backend takes the same names (the registry's), so a name never reads llama.cpp in one command
    and llamacpp in another."""
    found = {p: tuple(a.choices or ()) for p, n, _, a in HELPS if n == "--backend"}
    assert {"starchat serve", "starchat chat", "starchat eval humaneval", "starchat data pairs"} <= set(found)
    wrong = {p: c for p, c in found.items() if set(c) != BACKENDS}
    assert not wrong, f"--backend choices other than {sorted(BACKENDS)}: {wrong}"


@pytest.mark.parametrize("command", ["data", "eval", "export"])
def test_a_command_line_names_all_its_subcommands(command):
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    line = next(c.help for c in sub._choices_actions if c.dest == command)
    inner = next(a for a in sub.choices[command]._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in inner.choices if not re.search(rf"\b{re.escape(name)}\b", line)]
    assert not missing, f"`starchat --help` line of {command} ({line!r}) does not name {missing}"
