"""A chat conversation: history, slash commands, and streamed replies; terminal I/O goes through ChatIO."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from starchat.errors import StarchatError
from starchat.fsio import write_text_atomic
from starchat.inference import Engine, SamplingParams
from starchat.templates import validate_messages


class ChatIO(Protocol):
    """What the chat needs from a terminal (or a pipe, or a test)."""

    interactive: bool

    def read_input(self) -> str | None:
        """The next user message or /command; None at the end of input."""

    def show_stream(self, deltas: Iterable[str]) -> str:
        """Show a reply as it streams; returns the text shown (KeyboardInterrupt may escape)."""

    def info(self, text: str) -> None:
        """A status line (not part of any answer)."""

    def error(self, text: str) -> None:
        """A one-line error; the chat goes on."""

    def warn(self, text: str) -> None:
        """A warning about the last reply (code that does not compile, insecure code, links)."""


HELP = """Commands:
  /system TEXT      set the system prompt (empty: remove it); the history is kept
  /reset            forget the conversation (keeps the system prompt)
  /retry            regenerate the last reply
  /save FILE        save the conversation as JSON messages
  /load FILE        load a conversation saved with /save (or any JSON list of messages)
  /review           check the last reply again, requesting each link it has (needs the network)
  /params [k=v ...] show or change sampling: temperature, top_k, top_p, repetition_penalty,
                    max_new_tokens, stop (comma-separated), seed (none for random)
  \"\"\"               on a line of its own: start a multi-line message (paste code, blank lines and
                    all); another \"\"\" line sends it. (Piped input needs none: it is one message.)
  /help             this text
  /exit             leave (or Ctrl-D)
Ctrl-C stops a reply without leaving. Start a message with // to send a literal '/'."""


MAX_LOAD_BYTES = 16 << 20  # a saved conversation is text; more is not one


class ChatSession:
    def __init__(
        self,
        engine: Engine,
        io: ChatIO,
        params: SamplingParams | None = None,
        system: str | None = None,
        review: bool = True,
        check_urls: bool = False,
    ) -> None:
        self.engine, self.io = engine, io
        self.review, self.check_urls = review, check_urls  # see starchat.review
        self.finish_reason: str | None = None  # how the last reply ended: only "length" is "cut off"
        self.params = params or SamplingParams()
        self.system = system or None
        self.messages: list[dict[str, str]] = []  # user/assistant turns; the system prompt is kept apart
        self.errors = 0
        self.commands: dict[str, Callable[[str], bool | None]] = {
            "system": self._system,
            "reset": self._reset,
            "retry": self._retry,
            "save": self._save,
            "load": self._load,
            "params": self._params,
            "review": self._review_last,
            "help": self._help,
            "exit": self._exit,
            "quit": self._exit,
        }

    def conversation(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    def run(self) -> int:
        """The read-eval loop; returns the exit status (1 if a non-interactive run hit an error)."""
        while (line := self.io.read_input()) is not None:
            if line.startswith("/") and not line.startswith("//"):
                if self.command(line) is False:
                    break
            elif line.strip():
                self.send(line[1:] if line.startswith("//") else line)
        return 1 if self.errors and not self.io.interactive else 0

    def command(self, line: str) -> bool | None:
        name, _, arg = line[1:].partition(" ")
        handler = self.commands.get(name.strip().lower())
        if handler is None:
            return self._fail(f"unknown command /{name}: type /help for the list")
        try:
            return handler(arg.strip())
        except StarchatError as e:
            return self._fail(str(e))

    def send(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        if not self._reply():
            self.messages.pop()  # nothing was generated: the message was not really sent

    def _reply(self) -> bool:
        """Stream the assistant's reply to the conversation; Ctrl-C keeps what was shown."""
        cancel = threading.Event()
        try:
            gen = self.engine.stream(self.conversation(), self.params, cancel=cancel)
        except StarchatError as e:
            self._fail(str(e))
            return False
        shown: list[str] = []

        def tee():
            for d in gen:
                shown.append(d)
                yield d

        try:
            self.io.show_stream(tee())
        except KeyboardInterrupt:
            cancel.set()
            gen.close()
            self.io.info("[stopped]")
        except StarchatError as e:  # the backend failed mid-reply (a server that went away): the chat goes on
            cancel.set()
            gen.close()
            if not shown:
                self._fail(str(e))
                return False
            self._fail(f"{e} (the reply was cut here; /retry asks again)")
        except BaseException:  # e.g. BrokenPipeError from `| head -1`: stop generating, then let it out
            cancel.set()
            gen.close()
            raise
        text = gen.completion.text if gen.completion is not None else "".join(shown)
        self.messages.append({"role": "assistant", "content": text})
        self.finish_reason = (
            getattr(gen.completion, "finish_reason", None) if gen.completion is not None else "cancelled"
        )
        if self.review:
            self._review(text, self.check_urls)
        return True

    def _review(self, text: str, check_urls: bool) -> None:
        for finding in self._findings(text, check_urls):
            self.io.warn(str(finding))

    def _findings(self, text: str, check_urls: bool) -> list:
        from starchat.chat.advice import explain_ending
        from starchat.review import review

        found = review(text, check_urls=check_urls, finish_reason=self.finish_reason)
        return explain_ending(found, text, self.finish_reason)

    def _fail(self, message: str) -> None:
        self.errors += 1
        self.io.error(message)

    # -- commands ----------------------------------------------------------------------
    def _system(self, arg: str) -> None:
        self.system = arg or None
        self.io.info(f"system prompt set: {arg}" if arg else "system prompt removed")

    def _reset(self, arg: str) -> None:
        self.messages.clear()
        self.io.info("conversation reset")

    def _retry(self, arg: str) -> None:
        if self.messages and self.messages[-1]["role"] == "assistant":
            self.messages.pop()
        if not self.messages:
            return self._fail("nothing to retry: send a message first")
        self._reply()

    def _save(self, arg: str) -> None:
        if not arg:
            return self._fail("/save needs a file name, e.g. /save chat.json")
        path = Path(os.path.expanduser(arg))
        try:
            # through a symlink to its target: the link itself stays (an atomic rename would replace it)
            target = Path(os.path.realpath(path)) if path.is_symlink() else path
            write_text_atomic(target, json.dumps(self.conversation(), indent=2, ensure_ascii=False) + "\n")
        except OSError as e:
            return self._fail(f"cannot write {path}: {e.strerror}")
        self.io.info(f"saved {len(self.conversation())} messages to {path}")

    def _load(self, arg: str) -> None:
        if not arg:
            return self._fail("/load needs a file name, e.g. /load chat.json")
        path = Path(os.path.expanduser(arg))
        try:
            with path.open("rb") as f:  # capped: /load /dev/zero must not read forever
                raw = f.read(MAX_LOAD_BYTES + 1)
        except OSError as e:
            return self._fail(f"cannot read {path}: {e.strerror}")
        if b"\0" in raw:
            return self._fail(f"{path}: not a text file (it holds NUL bytes); /load reads a JSON conversation")
        if len(raw) > MAX_LOAD_BYTES:
            return self._fail(f"{path}: larger than {MAX_LOAD_BYTES >> 20} MiB; not a saved conversation")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            return self._fail(f"{path}: not a text file (byte {e.start} is not UTF-8); /load reads a JSON conversation")
        except json.JSONDecodeError as e:
            return self._fail(f"{path}: line {e.lineno}: not valid JSON ({e.msg})")
        if isinstance(data, dict) and "messages" in data:
            data = data["messages"]
        if not isinstance(data, list):
            return self._fail(f"{path}: expected a JSON list of {{role, content}} messages")
        msgs = validate_messages(data, where=str(path))
        self.system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else self.system
        self.messages = msgs
        self.io.info(f"loaded {len(msgs)} messages from {path}")

    def _params(self, arg: str) -> None:
        params = self.params
        for item in arg.split():
            key, eq, value = item.partition("=")
            if not eq:
                return self._fail(f"/params: {item!r} is not key=value, e.g. /params temperature=0.7")
            params = params.update_from_string(key.strip(), value.strip())
        self.params = params
        shown = ", ".join(f"{k}={v}" for k, v in vars(params).items())
        self.io.info(f"params: {shown}")

    def _review_last(self, arg: str) -> None:
        if not self.messages or self.messages[-1]["role"] != "assistant":
            return self._fail("/review: there is no reply to check yet")
        findings = self._findings(self.messages[-1]["content"], check_urls=True)
        for finding in findings:
            self.io.warn(str(finding))
        if not findings:
            self.io.info("review: no problems found (Python compiles, no insecure calls found, links answer)")

    def _help(self, arg: str) -> None:
        self.io.info(HELP)

    def _exit(self, arg: str) -> bool:
        return False
