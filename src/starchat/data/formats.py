"""The data-format registry: every dialogue and preference format `starchat data build` reads, in one table.

`read_source`, ``--format``'s choices and ``--kind``'s choices read `FORMATS`; nothing else lists formats.
Adding one is one module with ``is_X(record) -> bool`` and ``from_X(record, where)`` plus one line here
(see docs: "How to add a data format"). Within a kind, ``--format auto`` picks the first format in table
order whose ``detect`` accepts the record, so a more specific format goes before a looser one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starchat.data import dialogue, oasst, preference
from starchat.data.records import DataError

AUTO = "auto"
KINDS = ("dialogue", "preference")


@dataclass(frozen=True)
class Format:
    name: str
    kind: str
    """``dialogue`` (``convert`` returns messages) or ``preference`` (returns (prompt messages, meta))."""
    detect: Callable[[dict], bool]
    """Does a record (a dict) look like this format? Used by ``--format auto``."""
    help: str
    convert: Callable[[dict, str], Any] | None = None
    """One record and where it is (``file:line``) -> the dialogue; a DataError naming the field otherwise."""
    read_trees: Callable | None = None
    """Instead of ``convert``: all of a file's records at once (oasst's message trees need every row)."""


FORMATS: list[Format] = [
    Format("sharegpt", "dialogue", dialogue.is_sharegpt, "conversations with from/value turns", dialogue.from_sharegpt),
    Format("messages", "dialogue", dialogue.is_messages, "OpenAI-style messages lists", dialogue.from_messages),
    Format(
        "oasst",
        "dialogue",
        oasst.is_oasst,
        "oasst1 trees (flat rows or the tree export): root-to-leaf paths",
        read_trees=oasst.read_oasst,
    ),
    Format("guanaco", "dialogue", dialogue.is_guanaco, "'### Human:' / '### Assistant:' text", dialogue.from_guanaco),
    Format(
        "alpaca", "dialogue", dialogue.is_alpaca, "instruction/input/output, or prompt/completion", dialogue.from_alpaca
    ),
    Format(
        "oasst",
        "preference",
        oasst.is_oasst,
        "oasst1 trees: the best- vs the worst-ranked reply",
        read_trees=preference.read_oasst_pairs,
    ),
    Format("trl", "preference", preference.is_trl, "TRL's prompt/chosen/rejected message lists", preference.from_trl),
    Format(
        "hh", "preference", preference.is_hh, "Anthropic HH chosen/rejected Human:/Assistant: text", preference.from_hh
    ),
    Format("text", "preference", preference.is_text, "prompt/chosen/rejected strings", preference.from_text),
]


def names(kind: str) -> list[str]:
    """The ``--format`` values of one kind, ``auto`` first."""
    return [AUTO] + [f.name for f in FORMATS if f.kind == kind]


def choices() -> list[str]:
    """Every ``--format`` value of any kind (each once), ``auto`` first."""
    return list(dict.fromkeys([AUTO, *(f.name for f in FORMATS)]))


def cli_help() -> str:
    return "; ".join(f"{kind}: {', '.join(names(kind))}" for kind in KINDS)


def get(kind: str, name: str) -> Format:
    """The format ``name`` of ``kind``; a DataError naming --format and --kind when there is none."""
    if kind not in KINDS:
        raise DataError(f"--kind {kind!r}: use {' or '.join(KINDS)}")
    for f in FORMATS:
        if f.kind == kind and f.name == name:
            return f
    raise DataError(f"--format {name!r} is not one of {tuple(names(kind))} (for --kind {kind})")


def detect(rec: Any, where: str, kind: str = "dialogue") -> str:
    """The name of the first format of ``kind`` that accepts ``rec``; a DataError naming the fields otherwise."""
    if isinstance(rec, dict):
        for f in FORMATS:
            if f.kind == kind and f.detect(rec):
                return f.name
    keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
    need = (
        " a record needs 'chosen' and 'rejected' (and 'prompt' unless they are whole dialogues), or"
        if kind == "preference"
        else ""
    )
    what = "preference format" if kind == "preference" else "format"
    raise DataError(
        f"{where}: cannot tell the {what} from the fields {keys};{need} pass --format ({'|'.join(names(kind)[1:])})"
    )
