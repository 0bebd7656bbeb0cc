"""`starchat serve`: an OpenAI-compatible API and a web playground for a model."""

from __future__ import annotations

import os

from starchat.cli.endpoint_options import add_backend_option


def register(sub) -> None:
    from starchat.options import add_arguments
    from starchat.server.settings import ServerSettings

    p = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible API with a web playground",
        description="Serve a model at /v1 (OpenAI-compatible) with a playground at /. "
        "Without --model: the offline default SmolLM2-135M-Instruct GGUF.",
    )
    p.add_argument(
        "--model", default=None, help="HF model directory, hub ID or .gguf file (default: the offline SmolLM2 GGUF)"
    )
    add_backend_option(p)
    p.add_argument(
        "--template",
        default=None,
        help="force a chat format (e.g. starchat) instead of the model's own (default: the model's own)",
    )
    g = p.add_argument_group("server (see starchat.server.ServerSettings)")
    add_arguments(g, ServerSettings)  # every setting's flag, default and help come from the dataclass
    e = p.add_argument_group("engine")
    e.add_argument(
        "--n-ctx",
        type=int,
        default=None,
        help="the longest prompt + reply of one request (llama.cpp; vLLM's max_model_len) (default: "
        "the GGUF's trained context, at most 4096)",
    )
    e.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for llama.cpp and torch (default: the CPUs this process may use that other jobs leave idle)",
    )
    e.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM: shard the model over this many GPUs")
    e.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="vLLM: fraction of GPU memory to use (default: vLLM's own)",
    )
    p.set_defaults(func=_serve)


def settings_from_args(args):
    """The ServerSettings of the parsed options; --api-key falls back to $STARCHAT_API_KEY (read now, not when
    the parser was built, so `--help` never prints a key)."""
    from starchat.options import from_args
    from starchat.server.settings import ServerSettings

    return from_args(ServerSettings, args, api_key=args.api_key or os.environ.get("STARCHAT_API_KEY"))


def _serve(args) -> int:
    # The OpenMP wait and the thread count were set by the CLI (starchat.threads) before this.
    from starchat.inference.endpoint import is_endpoint
    from starchat.server import serve

    if is_endpoint(args.model):
        from starchat.errors import StarchatError

        raise StarchatError(f"{args.model} is already a server: point clients at it instead of serving it again")

    settings = settings_from_args(args)
    engine_kw = {}
    if args.n_ctx:
        engine_kw["n_ctx"] = args.n_ctx
    if args.backend == "vllm":
        engine_kw["tensor_parallel_size"] = args.tensor_parallel_size
        if args.gpu_memory_utilization:
            engine_kw["gpu_memory_utilization"] = args.gpu_memory_utilization
    elif args.tensor_parallel_size != 1:
        from starchat.errors import StarchatError

        raise StarchatError("--tensor-parallel-size needs --backend vllm")
    serve(args.model, backend=args.backend, template=args.template, settings=settings, **engine_kw)
    return 0
