"""Streams a markdown reply to a terminal so the scrollback holds each line once: finished blocks are printed
for good, only the open block is redrawn live, cropped to fewer lines than the window has.

rich's ``Live`` can only redraw what is still on the screen; a live region taller than the window leaves a
copy of its top in the scrollback at every refresh. So a block (a paragraph ended by a blank line, a closed
code fence) is printed once above the live region as soon as it is complete, and the live region shows the
last lines of the open block only.

Code is printed without a left margin and without hard wraps (the terminal soft-wraps long lines), so it
copies as it was written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# The opening fence of a code block (CommonMark: up to 3 spaces of indent, ``` or ~~~, an info string).
_OPEN_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)")
CODE_THEME = "monokai"
LIVE_MARGIN = 3  # rows of the window the live region leaves free (the prompt, a status line, one spare)


@dataclass
class Block:
    kind: str  # "prose" (markdown) or "code" (the body of a fenced block)
    text: str
    lang: str = ""  # the fence's info string, first word ('' when untagged)
    closed: bool = True  # False: a fence the reply never closed


class BlockSplitter:
    """Cuts a streamed markdown text into blocks as soon as each one is complete.

    Only whole lines decide anything: a blank line outside a fence ends a prose block, an opening fence
    ends the prose before it, a closing fence ends the code block. What is left is the open block.
    """

    def __init__(self) -> None:
        self._partial = ""  # the text after the last newline
        self._lines: list[str] = []  # whole lines of the open block
        self._fence: tuple[str, int, str, int] | None = None  # (char, length, lang, indent) of an open fence

    def feed(self, delta: str) -> list[Block]:
        """Blocks that ``delta`` completed, in order."""
        done: list[Block] = []
        *whole, self._partial = (self._partial + delta).split("\n")
        for line in whole:
            self._line(line, done)
        return done

    def _line(self, line: str, done: list[Block]) -> None:
        if self._fence is not None:
            char, length, lang, indent = self._fence
            stripped = line.strip()
            if stripped.startswith(char * length) and not stripped.strip(char):
                done.append(Block("code", _code(self._lines, indent), lang))
                self._lines, self._fence = [], None
            else:
                self._lines.append(line)
            return
        m = _OPEN_FENCE.match(line)
        if m:
            self._flush_prose(done)
            self._fence = (m.group(2)[0], len(m.group(2)), m.group(3).lower(), len(m.group(1)))
        elif not line.strip():
            self._flush_prose(done)
        else:
            self._lines.append(line)

    def _flush_prose(self, done: list[Block]) -> None:
        if any(ln.strip() for ln in self._lines):
            done.append(Block("prose", "\n".join(self._lines)))
        self._lines = []

    def open_block(self) -> Block | None:
        """The block still being written (with the partial last line), or None."""
        lines = self._lines + ([self._partial] if self._partial else [])
        if self._fence is not None:
            return Block("code", _code(lines, self._fence[3]), self._fence[2], closed=False)
        if _OPEN_FENCE.match(self._partial):  # a fence being typed is not prose to show
            lines = self._lines
        text = "\n".join(lines)
        return Block("prose", text) if text.strip() else None

    def finish(self) -> list[Block]:
        """The open block as a last one, at the end of the reply."""
        done = self.feed("\n") if self._partial else []
        if self._fence is not None:
            done.append(Block("code", _code(self._lines, self._fence[3]), self._fence[2], closed=False))
            self._lines, self._fence = [], None
        self._flush_prose(done)
        return done


def _code(lines: list[str], indent: int) -> str:
    """A fence's body: the fence's own indent (up to its width) is markdown, not code."""
    return "\n".join(ln[min(indent, len(ln) - len(ln.lstrip(" "))) :] for ln in lines)


def code_text(code: str, lang: str):
    """Highlighted code as a rich Text: no background (no padding to the window's width), tabs kept as set."""
    from rich.syntax import Syntax

    syntax = Syntax(code, lang or "text", theme=CODE_THEME, background_color="default")
    text = syntax.highlight(code)
    text.rstrip()
    return text


def renderable(block: Block):
    if block.kind == "code":
        return code_text(block.text, block.lang)
    from rich.markdown import Markdown

    return Markdown(block.text, code_theme=CODE_THEME)


class _Tail:
    """The live region: the open block's last lines, fewer than the window has, each cropped to its width."""

    def __init__(self) -> None:
        self.block: Block | None = None

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        if self.block is None:
            return
        item = renderable(self.block)
        if self.block.kind == "code":
            item.no_wrap, item.overflow = True, "crop"  # a preview: the committed copy is soft-wrapped
        keep = max(1, console.height - LIVE_MARGIN)
        lines = console.render_lines(item, options.update(height=None), pad=False)
        for line in lines[-keep:]:
            yield from line
            yield Segment.line()


class MarkdownStream:
    """Prints one reply: finished blocks once, through ``console.print``, above a live view of the open one."""

    def __init__(self, console) -> None:
        self.console = console
        self.splitter = BlockSplitter()
        self.printed = 0  # blocks printed so far (a blank line goes between two)

    def commit(self, blocks: Iterable[Block]) -> None:
        for block in blocks:
            if self.printed:
                self.console.print()
            if block.kind == "code":  # soft_wrap: no hard line breaks and no cropping inside code
                self.console.print(code_text(block.text, block.lang), soft_wrap=True)
            else:
                self.console.print(renderable(block))
            self.printed += 1

    def run(self, deltas: Iterable[str]) -> str:
        from rich.live import Live

        parts: list[str] = []
        tail = _Tail()
        live = Live(
            tail,
            console=self.console,
            refresh_per_second=10,
            transient=True,
            vertical_overflow="crop",
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with live:
            try:
                for d in deltas:
                    parts.append(d)
                    self.commit(self.splitter.feed(d))
                    tail.block = self.splitter.open_block()
            finally:  # also on Ctrl-C: what was shown stays on the screen, printed once
                tail.block = None
                live.refresh()
                self.commit(self.splitter.finish())
        return "".join(parts)
