"""Two ChatIO implementations: a rich terminal (markdown, multi-line input) and a plain pipe for scripts/tests."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO

from starchat.errors import StarchatError

MULTILINE = '"""'  # a line of just this starts (and ends) a multi-line message
MAX_MESSAGE_CHARS = 1 << 20  # one piped message; bounds what a stray binary file on stdin can cost


class PipeIO:
    """Non-interactive: stdin holds messages and /commands, answers go to stdout, everything else to stderr.

    Consecutive lines that are not commands form one message (so a piped file is one question);
    a /command line ends the message before it.
    """

    interactive = False

    def __init__(
        self, stdin: IO[str] | None = None, stdout: IO[str] | None = None, stderr: IO[str] | None = None
    ) -> None:
        self.stdin, self.stdout, self.stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
        self._lines: Iterator[str] = self._read_lines()
        self._pending: str | None = None

    def _read_lines(self) -> Iterator[str]:
        """stdin's lines, each bounded; binary input is a StarchatError, not a traceback or a hang."""
        while True:
            try:
                line = self.stdin.readline(MAX_MESSAGE_CHARS + 1)
            except UnicodeDecodeError:
                raise StarchatError("stdin: not UTF-8 text (binary data?); pipe in a text question") from None
            if not line:
                return
            if "\0" in line:
                raise StarchatError("stdin: binary data (NUL bytes), not text; pipe in a text question")
            if len(line) > MAX_MESSAGE_CHARS:
                raise StarchatError(f"stdin: a line longer than {MAX_MESSAGE_CHARS} characters; not a question")
            yield line

    def read_input(self) -> str | None:
        block: list[str] = []
        size = 0
        while True:
            line = self._pending if self._pending is not None else next(self._lines, None)
            self._pending = None
            if line is None:
                break
            size += len(line)
            if size > MAX_MESSAGE_CHARS:
                raise StarchatError(f"stdin: a message longer than {MAX_MESSAGE_CHARS} characters")
            line = line.rstrip("\n")
            if line.startswith("/") and not line.startswith("//"):
                if block:
                    self._pending = line + "\n"  # a command ends the message before it
                    break
                return line
            block.append(line)
        text = "\n".join(block).strip("\n")
        return text if block else None

    def show_stream(self, deltas: Iterable[str]) -> str:
        parts = []
        for d in deltas:
            parts.append(d)
            self.stdout.write(d)
            self.stdout.flush()
        self.stdout.write("\n")
        self.stdout.flush()
        return "".join(parts)

    def info(self, text: str) -> None:
        print(text, file=self.stderr)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=self.stderr)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=self.stderr)


class RichIO:
    """Interactive: a prompt with line editing and history, replies rendered as markdown while they stream."""

    interactive = True

    def __init__(self, markdown: bool = True, console=None) -> None:
        from rich.console import Console

        try:
            import readline  # noqa: F401  (arrow keys and history for input())
        except ImportError:
            pass
        self.console = console or Console(highlight=False)
        self.markdown = markdown

    def read_input(self) -> str | None:
        while True:
            try:
                first = input(">>> ")
            except EOFError:
                self.console.print()
                return None
            except KeyboardInterrupt:
                self.console.print("\n[dim](Ctrl-D or /exit to leave)[/dim]")
                continue
            if first.strip() != MULTILINE:
                return first
            lines = []
            try:
                while (line := input("... ")).strip() != MULTILINE:
                    lines.append(line)
            except (EOFError, KeyboardInterrupt):
                self.console.print()
            return "\n".join(lines)

    def show_stream(self, deltas: Iterable[str]) -> str:
        if self.markdown:
            from starchat.chat.stream_render import MarkdownStream

            return MarkdownStream(self.console).run(deltas)
        # --plain: the text as it comes; the terminal keeps its own scrollback, nothing is redrawn
        parts = []
        out = self.console.file
        try:
            for d in deltas:
                parts.append(d)
                out.write(d)
                out.flush()
        finally:
            if parts and not parts[-1].endswith("\n"):
                out.write("\n")
            out.flush()
        return "".join(parts)

    def info(self, text: str) -> None:
        self.console.print(text, style="dim", markup=False)

    def error(self, text: str) -> None:
        self.console.print(f"error: {text}", style="bold red", markup=False)

    def warn(self, text: str) -> None:
        self.console.print(f"⚠ {text}", style="yellow", markup=False)
