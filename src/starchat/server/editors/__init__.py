"""Editor configurations (Continue, Tabby) pointing at `starchat serve`, filled in for the served model's FIM tokens."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from string import Template

from starchat import fim
from starchat.errors import StarchatError

EDITORS = {"continue": "continue.yaml", "tabby": "tabby.toml"}
DEFAULT_CONTEXT = 4096  # `starchat serve`'s llama.cpp context when the model knows no shorter one


@dataclass
class ServedModel:
    """What an editor config needs to know of the served model."""

    spec: fim.FimSpec
    context_length: int


def starcoder_default() -> ServedModel:
    """StarCoder's FIM tokens (starchat's own format, ``fim.add_fim_tokens``), for configs made without a model."""
    spec = fim.detect({*fim.ADDED, "<|endoftext|>"})
    assert spec is not None
    return ServedModel(spec, DEFAULT_CONTEXT)


def read_model(model: str) -> ServedModel:
    """The FIM tokens and context of a HF model directory or a .gguf file (vocabulary only, no weights)."""
    if model.endswith(".gguf"):
        return _read_gguf(model)
    if not os.path.isdir(model):
        raise StarchatError(f"--model {model!r}: not a model directory or .gguf file")
    from transformers import AutoTokenizer

    spec = fim.require(fim.load_spec(model, AutoTokenizer.from_pretrained(model)), model)
    try:
        with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
            cfg = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        cfg = {}
    ctx = cfg.get("max_position_embeddings") or cfg.get("n_positions") or DEFAULT_CONTEXT
    return ServedModel(spec, int(ctx))


def _read_gguf(path: str) -> ServedModel:
    import llama_cpp
    from llama_cpp import Llama

    from starchat.inference.fimvocab import from_llama_vocab

    if not os.path.isfile(path):
        raise StarchatError(f"--model {path!r}: no such GGUF file")
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    try:

        def piece(t: int) -> str:
            return llm.detokenize([t], special=True).decode("utf-8", errors="replace")

        found = from_llama_vocab(
            llama_cpp, llama_cpp.llama_model_get_vocab(llm.model), llm.n_vocab(), piece, piece(llm.token_eos())
        )
        arch = llm.metadata.get("general.architecture", "")
        trained = int(llm.metadata.get(f"{arch}.context_length", 0) or DEFAULT_CONTEXT)
    finally:
        llm.close()
    spec = fim.require(found.spec if found else None, path)
    return ServedModel(spec, min(trained, DEFAULT_CONTEXT))


def render(editor: str, url: str, model: ServedModel, model_name: str = "starchat", api_key: str = "none") -> str:
    """The editor's config file as text."""
    if editor not in EDITORS:
        raise StarchatError(f"unknown editor {editor!r}: use one of {', '.join(EDITORS)}")
    s = model.spec
    text = resources.files("starchat.server.editors").joinpath(EDITORS[editor]).read_text("utf-8")
    # Continue's templates are Mustache ({{{prefix}}}: unescaped); Tabby's use {prefix}. Both are written into
    # a double-quoted YAML / TOML string, so the token text is escaped as JSON (a subset of both).
    esc = lambda t: json.dumps(t, ensure_ascii=False)[1:-1]  # noqa: E731
    return Template(text).substitute(
        url=url.rstrip("/"),
        model_name=esc(model_name),
        api_key=esc(api_key),
        context_length=model.context_length,
        continue_template=esc(f"{s.prefix}{{{{{{prefix}}}}}}{s.suffix}{{{{{{suffix}}}}}}{s.middle}"),
        tabby_template=esc(f"{s.prefix}{{prefix}}{s.suffix}{{suffix}}{s.middle}"),
    )
