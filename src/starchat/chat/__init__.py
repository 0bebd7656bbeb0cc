"""`starchat chat`: a terminal REPL on the inference engine; non-interactive when stdin is a pipe."""

from __future__ import annotations

import sys
from typing import IO

from starchat.chat.session import HELP, ChatIO, ChatSession
from starchat.chat.terminal import PipeIO, RichIO
from starchat.inference import SamplingParams, load_engine
from starchat.inference.params import resolve_sampling

__all__ = ["HELP", "ChatIO", "ChatSession", "PipeIO", "RichIO", "chat"]


def chat(
    model: str | None = None,
    backend: str = "auto",
    template: str | None = None,
    system: str | None = None,
    params: SamplingParams | None = None,
    interactive: bool | None = None,
    markdown: bool = True,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    review: bool = True,
    check_urls: bool = False,
    sampling: dict | None = None,
    **engine_kw,
) -> int:
    """Load the model and run the chat; returns the exit status. ``sampling``: SamplingParams fields where
    None means "not set", so the model's own generation_config.json / GGUF metadata decides (see
    ``starchat.inference.params.saved_sampling_defaults``); ``params`` wins over both."""
    stdin = stdin or sys.stdin
    if interactive is None:
        interactive = stdin.isatty()
    if interactive:
        io: ChatIO = RichIO(markdown=markdown)
        io.info(f"loading {model or 'the default model (SmolLM2-135M-Instruct)'}...")
    else:
        io = PipeIO(stdin, stdout, stderr)
    engine = load_engine(model, backend=backend, template=template, **engine_kw)
    if params is None:
        metadata = getattr(getattr(engine, "llm", None), "metadata", None)  # llama.cpp's GGUF key/values
        params = resolve_sampling(model, metadata if isinstance(metadata, dict) else None, **(sampling or {}))
    if interactive:
        io.info(
            f"{engine.model_name} ready ({type(engine).__name__}, context {engine.context_length}). "
            "/help for commands, Ctrl-C stops a reply, Ctrl-D leaves."
        )
    try:
        return ChatSession(engine, io, params, system, review=review, check_urls=check_urls).run()
    except BrokenPipeError:  # `starchat chat ... | head -1`: the reader has all it wanted
        _quiet_stdout()
        return 0
    finally:
        engine.close()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not report the broken pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
