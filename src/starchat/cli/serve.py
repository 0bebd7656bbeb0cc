"""`starchat serve`: an OpenAI-compatible API and a web playground for a model."""

from __future__ import annotations

import os

from starchat.cli.endpoint_options import add_backend_option


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API with a web playground",
                       description="Serve a model at /v1 (OpenAI-compatible) with a playground at /. "
                                   "Without --model: the offline default SmolLM2-135M-Instruct GGUF.")
    p.add_argument("--model", default=None, help="HF model directory, hub ID or .gguf file (default: offline GGUF)")
    add_backend_option(p)
    p.add_argument("--template", default=None, help="force a chat format (e.g. starchat) instead of the model's own")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("STARCHAT_API_KEY"),
                   help="require `Authorization: Bearer KEY` on /v1 (default: $STARCHAT_API_KEY, else none)")
    p.add_argument("--model-name", default=None, help="model id to show in /v1/models (default: the model's name)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="requests decoded together: rows of each forward pass (transformers), parallel slots "
                        "of the llama.cpp context, vLLM's batch")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before answering 503")
    p.add_argument("--max-tokens-cap", type=int, default=4096, help="largest max_tokens a request may ask for")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body")
    p.add_argument("--n-ctx", type=int, default=None, help="llama.cpp: the longest prompt + reply of one request")
    p.add_argument("--kv-tokens", type=int, default=16384,
                   help="KV cache positions shared by the running requests (llama.cpp cells; transformers: rows x "
                        "longest row); each reserves prompt + max_tokens, the rest wait (memory grows with it)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send its request headers (else the connection is closed)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client has to send its request body after the headers (else 408)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for llama.cpp and torch (default: the CPUs this process may use that "
                        "other jobs leave idle)")
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="vLLM: shard the model over this many GPUs")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="vLLM: fraction of GPU memory to use")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    # The OpenMP wait and the thread count were set by the CLI (starchat.threads) before this.
    from starchat.inference.endpoint import is_endpoint
    from starchat.server import ServerSettings, serve

    if is_endpoint(args.model):
        from starchat.errors import StarchatError

        raise StarchatError(f"{args.model} is already a server: point clients at it instead of serving it again")

    settings = ServerSettings(host=args.host, port=args.port, api_key=args.api_key, model_name=args.model_name,
                              max_batch=args.max_batch, kv_tokens=args.kv_tokens, max_queue=args.max_queue,
                              max_tokens_cap=args.max_tokens_cap, max_body_bytes=args.max_body_bytes,
                              header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout)
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
