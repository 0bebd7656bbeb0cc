"""The data-format registry: `data build` reads, detects and offers exactly the formats in its table."""

import json
import sys
import types

import pytest

from starchat.cli import main
from starchat.data import formats
from starchat.data.records import DataError, get_field


def is_qa(rec):
    return {"q", "a"} <= set(rec)


def from_qa(rec, where):
    return [
        {"role": "user", "content": get_field(rec, "q", where)},
        {"role": "assistant", "content": get_field(rec, "a", where)},
    ]


@pytest.fixture
def qa_format(monkeypatch):
    """A new format added the documented way: a module with is_qa/from_qa, and one registry line."""
    mod = types.ModuleType("qa_format")
    mod.is_qa, mod.from_qa = is_qa, from_qa
    monkeypatch.setitem(sys.modules, "qa_format", mod)
    monkeypatch.setattr(
        formats, "FORMATS", [*formats.FORMATS, formats.Format("qa", "dialogue", mod.is_qa, "q/a pairs", mod.from_qa)]
    )


def _qa_file(tmp_path, n=12):
    f = tmp_path / "qa.jsonl"
    f.write_text("".join(json.dumps({"q": f"question {i}?", "a": f"answer {i}."}) + "\n" for i in range(n)))
    return f


def test_a_new_format_is_one_registry_line(qa_format, tmp_path, capsys):
    """Detected by --format auto, accepted by --format, and built into a dataset by `data build`."""
    src = _qa_file(tmp_path)
    assert (
        main(
            [
                "data",
                "build",
                "--input",
                str(src),
                "--output",
                str(tmp_path / "out"),
                "--format",
                "qa",
                "--test-size",
                "0.25",
            ]
        )
        == 0
    )
    assert main(["data", "build", "--input", str(src), "--output", str(tmp_path / "auto"), "--test-size", "0.25"]) == 0
    stats = json.loads((tmp_path / "auto" / "stats.json").read_text())
    assert stats["splits"]["train"] + stats["splits"]["test"] == 12


def test_the_cli_offers_the_table():
    from starchat.cli import build_parser

    data = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices["data"]
    build = next(a for a in data._actions if a.__class__.__name__ == "_SubParsersAction").choices["build"]
    opts = {a.dest: a for a in build._actions}
    assert list(opts["format"].choices) == formats.choices()
    assert set(formats.choices()) == {"auto", "oasst", "guanaco", "sharegpt", "messages", "alpaca", "trl", "text", "hh"}
    assert list(opts["kind"].choices) == list(formats.KINDS)


def test_detection_follows_the_table_within_a_kind():
    both = {"message_id": "m", "parent_id": None, "messages": []}  # messages before oasst among dialogues
    assert formats.detect(both, "x:1", "dialogue") == "messages"
    assert formats.detect({"chosen": "Human: hi\n\nAssistant: yo", "prompt": "hi"}, "x:1", "preference") == "hh"
    with pytest.raises(
        DataError,
        match=r"x:1: cannot tell the format from the fields \['q'\]; pass --format "
        r"\(sharegpt\|messages\|oasst\|guanaco\|alpaca\)",
    ):
        formats.detect({"q": 1}, "x:1", "dialogue")
    with pytest.raises(DataError, match=r"--format 'hh' is not one of .* \(for --kind dialogue\)"):
        formats.get("dialogue", "hh")
