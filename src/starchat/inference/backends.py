"""The backend registry: every inference backend's name, engine class, server scheduler and help text.

`load_engine`, the server's `make_scheduler`, and the ``--backend`` choices and help of `starchat chat`,
`serve` and `eval` all read `BACKENDS`; nothing else lists backends. Adding one is one engine module
plus one line here (see docs: "How to add a backend").

Classes and factories are named by ``"module:attribute"`` and imported only when that backend is used:
loading a GGUF never imports torch or vLLM, and this layer never imports the server package above it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from starchat import dotted
from starchat.errors import StarchatError

AUTO = "auto"


@dataclass(frozen=True)
class Backend:
    name: str
    engine: str
    """``module:Class`` of the Engine; built as ``Class.open(model, template=..., **kw)``."""
    help: str
    scheduler: str = "starchat.server.scheduler:one_at_a_time"
    """``module:factory`` with ``factory(engine, settings) -> scheduler``; the default runs one request at a time."""
    by_url: bool = False
    """Picked by an http(s):// model instead of by ``--backend``."""

    def engine_class(self) -> type:
        return dotted.resolve(self.engine)

    def scheduler_factory(self):
        return dotted.resolve(self.scheduler)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "transformers",
            "starchat.inference.hf:TransformersEngine",
            "Hugging Face transformers, CPU or GPU (model directories and hub IDs)",
            scheduler="starchat.server.batcher:from_settings",
        ),
        Backend(
            "llamacpp",
            "starchat.inference.llamacpp:LlamaCppEngine",
            "llama.cpp on the CPU (.gguf files)",
            scheduler="starchat.server.llama_batcher:from_settings",
        ),
        Backend(
            "vllm",
            "starchat.inference.vllm:VLLMEngine",
            "vLLM on NVIDIA GPUs (model directories and hub IDs)",
            scheduler="starchat.server.vllm_scheduler:from_settings",
        ),
        Backend(
            "endpoint",
            "starchat.inference.endpoint:EndpointEngine",
            "an OpenAI-compatible server, given as --model http(s)://HOST[:PORT]/v1",
            by_url=True,
        ),
    )
}


def choices() -> list[str]:
    """The values ``--backend`` accepts: auto and every backend picked by name."""
    return [AUTO] + [b.name for b in BACKENDS.values() if not b.by_url]


def cli_help() -> str:
    """The one ``--backend`` help text of every command, with its default."""
    named = "; ".join(f"{b.name}: {b.help}" for b in BACKENDS.values() if not b.by_url)
    return f"inference backend. auto: .gguf files -> llamacpp, anything else -> transformers; {named} (default: auto)"


def get(name: str) -> Backend:
    if name not in BACKENDS:
        raise StarchatError(f"unknown backend {name!r}: use one of {', '.join(choices())}")
    return BACKENDS[name]


def resolve(model: str, backend: str = AUTO) -> str:
    """``auto``: a .gguf file -> llamacpp; a directory or hub ID -> transformers."""
    if backend != AUTO and (backend not in BACKENDS or BACKENDS[backend].by_url):
        raise StarchatError(f"unknown backend {backend!r}: use one of {', '.join(choices())}")
    if backend != AUTO:
        return backend
    if model.endswith(".gguf") or os.path.isfile(model):
        return "llamacpp"
    return "transformers"


def backend_of(engine: object) -> Backend | None:
    """The registered backend whose engine class ``engine`` is an instance of (None: a custom engine).

    Only backends whose module is already imported are checked: an engine of a class that was never
    imported cannot exist, and checking must not import vLLM or torch."""
    import sys

    for b in BACKENDS.values():
        module, _, attr = b.engine.partition(":")
        cls = getattr(sys.modules.get(module), attr, None)
        if cls is not None and isinstance(engine, cls):
            return b
    return None
