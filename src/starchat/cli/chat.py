"""`starchat chat`: talk to a model in the terminal, or pipe a question in and get the answer out."""

from __future__ import annotations

from starchat.inference.params import SamplingParams

_DEFAULTS = SamplingParams()


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal",
                       description="Chat with a model. With no --model: SmolLM2-135M-Instruct, offline. "
                                   "With stdin from a pipe: answer it and exit (echo 'question' | starchat chat).")
    p.add_argument("--model", "-m", default=None, help="model directory, hub ID or .gguf file (default: offline SmolLM2)")
    p.add_argument("--backend", default="auto", choices=["auto", "transformers", "llamacpp", "vllm"],
                   help="default: llamacpp for .gguf files, transformers otherwise")
    p.add_argument("--template", default=None,
                   help="force a chat format: 'starchat', 'alpaca' or a dialogue_template.json (default: the model's own)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=_DEFAULTS.temperature)
    p.add_argument("--top-k", type=int, default=_DEFAULTS.top_k)
    p.add_argument("--top-p", type=float, default=_DEFAULTS.top_p)
    p.add_argument("--repetition-penalty", type=float, default=_DEFAULTS.repetition_penalty)
    p.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="makes sampling repeatable")
    p.add_argument("--n-ctx", type=int, default=None, help="context to allocate for GGUF models (default 4096)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for llama.cpp and torch (default: the CPUs this process may use that "
                        "other jobs leave idle)")
    p.add_argument("--no-review", action="store_true",
                   help="do not check replies for Python that does not compile, insecure code and links")
    p.add_argument("--check-urls", action="store_true", help="request every link a reply has (needs the network)")
    p.add_argument("--plain", action="store_true", help="print replies as plain text, no markdown rendering")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from starchat.chat import chat

    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
                            stop=args.stop, seed=args.seed)
    kw = {k: v for k, v in (("n_ctx", args.n_ctx), ("n_threads", args.threads)) if v}
    return chat(args.model, backend=args.backend, template=args.template, system=args.system, params=params,
                markdown=not args.plain, review=not args.no_review, check_urls=args.check_urls, **kw)
