"""The interactive terminal: markdown rendering of a streamed reply and multi-line input."""

import io

from rich.console import Console

from starchat.chat import RichIO


def test_streamed_reply_is_rendered_as_markdown():
    buf = io.StringIO()
    term = RichIO(console=Console(file=buf, width=60, force_terminal=False))
    text = term.show_stream(iter(["Use **sorted**:\n\n```py", "thon\nsorted(xs)\n```\n"]))
    shown = buf.getvalue()
    assert text == "Use **sorted**:\n\n```python\nsorted(xs)\n```\n"
    assert "sorted(xs)" in shown and "```" not in shown and "**" not in shown


def test_triple_quotes_make_one_multi_line_message(monkeypatch):
    lines = iter(['"""', "def f():", "    return 1", '"""', "next"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    term = RichIO(console=Console(file=io.StringIO()))
    assert term.read_input() == "def f():\n    return 1"
    assert term.read_input() == "next"
