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


def test_blocks_are_the_same_whatever_the_stream_pieces():
    from chatterm_fake import CODE, REPLY

    from starchat.chat.stream_render import BlockSplitter

    whole = BlockSplitter()
    blocks = whole.feed(REPLY) + whole.finish()
    by_char = BlockSplitter()
    pieces = [b for ch in REPLY for b in by_char.feed(ch)] + by_char.finish()
    assert pieces == blocks
    code = [b for b in blocks if b.kind == "code"]
    assert len(code) == 1 and code[0].text == "\n".join(CODE) and code[0].lang == "python" and code[0].closed


def test_a_block_is_final_once_a_blank_line_or_closing_fence_ends_it():
    from starchat.chat.stream_render import BlockSplitter

    s = BlockSplitter()
    assert s.feed("First para\ngoes on\n") == []  # may go on
    assert [b.text for b in s.feed("\nSee:\n```py\nx = 1\n")] == ["First para\ngoes on", "See:"]
    assert s.open_block().kind == "code" and s.open_block().text == "x = 1"
    assert [(b.kind, b.text) for b in s.feed("```\n")] == [("code", "x = 1")]
    assert s.feed("open ```") == [] and s.finish()[0].text == "open ```"


def test_a_fence_the_reply_never_closed_is_shown_as_code():
    from starchat.chat.stream_render import BlockSplitter

    s = BlockSplitter()
    s.feed("  ```js\n  let a = 1;\n    f();")
    (block,) = s.finish()
    assert (block.kind, block.lang, block.closed, block.text) == ("code", "js", False, "let a = 1;\n  f();")


def test_code_is_printed_without_margin_or_hard_wraps_on_a_narrow_console():
    buf = io.StringIO()
    term = RichIO(console=Console(file=buf, width=30, force_terminal=False))
    long = "    total = sum(price * qty for price, qty in basket)  # wider than the console"
    term.show_stream(iter(["Here:\n\n```python\ndef f(basket):\n", long + "\n", "    return total\n```\n"]))
    lines = buf.getvalue().splitlines()
    assert "def f(basket):" in lines and long in lines and "    return total" in lines


def test_plain_mode_prints_the_text_as_it_comes():
    buf = io.StringIO()
    term = RichIO(markdown=False, console=Console(file=buf, width=30, force_terminal=False))
    assert term.show_stream(iter(["# Title\n", "```py\nx = 1\n```"])) == "# Title\n```py\nx = 1\n```"
    assert buf.getvalue() == "# Title\n```py\nx = 1\n```\n"


def test_ctrl_c_keeps_what_was_shown_on_the_screen():
    buf = io.StringIO()
    term = RichIO(console=Console(file=buf, width=40, force_terminal=False))

    def deltas():
        yield "Half a para"
        raise KeyboardInterrupt

    try:
        term.show_stream(deltas())
    except KeyboardInterrupt:
        pass
    assert "Half a para" in buf.getvalue()


def test_the_live_view_shows_the_open_blocks_last_lines_within_the_window():
    from starchat.chat.stream_render import LIVE_MARGIN, BlockSplitter, _Tail

    console = Console(file=io.StringIO(), width=40, height=12, force_terminal=False)
    s = BlockSplitter()
    s.feed("```python\n" + "".join(f"x{i} = {i}  # a comment long enough to be cropped here\n" for i in range(50)))
    tail = _Tail()
    tail.block = s.open_block()
    with console.capture() as cap:
        console.print(tail)
    shown = cap.get().splitlines()
    assert len(shown) == 12 - LIVE_MARGIN  # shorter than the window: it can always be redrawn in place
    assert shown[-1].startswith("x49 = 49") and shown[0].startswith(f"x{50 - len(shown)} =")
    assert all(len(line) <= 40 for line in shown)
