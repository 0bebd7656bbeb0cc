"""`starchat chat`: talk to a model in the terminal, or pipe a question in and get the answer out."""

from __future__ import annotations

from starchat.cli.endpoint_options import add_backend_option, add_endpoint_options, endpoint_kwargs
from starchat.inference.params import SamplingParams

_DEFAULTS = SamplingParams()


def register(sub) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a model in the terminal",
        description="Chat with a model. With no --model: SmolLM2-135M-Instruct, offline. "
        "With stdin from a pipe: answer it and exit (echo 'question' | starchat chat).",
    )
    p.add_argument(
        "--model",
        "-m",
        default=None,
        help="model directory, hub ID, .gguf file or http(s)://HOST[:PORT]/v1 endpoint (default: offline SmolLM2)",
    )
    add_backend_option(p)
    p.add_argument(
        "--template",
        default=None,
        help="force a chat format: 'starchat', 'alpaca' or a dialogue_template.json (default: the model's own)",
    )
    p.add_argument("--system", default=None, help="system prompt")
    # Unset sampling flags stay None: the model's own generation_config.json (or GGUF metadata) comes first.
    saved = " (default: the model's generation_config.json or GGUF sampling metadata, else %s)"
    p.add_argument("--temperature", type=float, default=None, help="0 is greedy" + saved % _DEFAULTS.temperature)
    p.add_argument("--top-k", type=int, default=None, help="0 is off" + saved % _DEFAULTS.top_k)
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling" + saved % _DEFAULTS.top_p)
    p.add_argument(
        "--repetition-penalty", type=float, default=None, help="1 is off" + saved % _DEFAULTS.repetition_penalty
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="reply length" + saved % _DEFAULTS.max_new_tokens)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="makes sampling repeatable")
    p.add_argument("--n-ctx", type=int, default=None, help="context to allocate for GGUF models (default 4096)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for llama.cpp and torch (default: the CPUs this process may use that other jobs leave idle)",
    )
    p.add_argument(
        "--no-review",
        action="store_true",
        help="do not check replies for Python that does not compile, insecure code and links",
    )
    p.add_argument("--check-urls", action="store_true", help="request every link a reply has (needs the network)")
    p.add_argument("--plain", action="store_true", help="print replies as plain text, no markdown rendering")
    add_endpoint_options(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from starchat.chat import chat

    # None = not set: the model's saved sampling defaults fill it in once it is loaded
    sampling = dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
        stop=args.stop,
        seed=args.seed,
    )
    kw = {k: v for k, v in (("n_ctx", args.n_ctx), ("n_threads", args.threads)) if v}
    kw.update(endpoint_kwargs(args))
    return chat(
        args.model,
        backend=args.backend,
        template=args.template,
        system=args.system,
        sampling=sampling,
        markdown=not args.plain,
        review=not args.no_review,
        check_urls=args.check_urls,
        **kw,
    )
