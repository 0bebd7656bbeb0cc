"""`starchat eval infill`: HumanEval single-line, multi-line and random-span infilling from the model's FIM prompt."""

from __future__ import annotations

from pathlib import Path

from starchat.cli.endpoint_options import add_backend_option, add_endpoint_options, endpoint_kwargs, endpoint_slug

HELP = "fill-in-the-middle: HumanEval with a line, a block or a span masked"


def register_infill(ev, name: str = "infill", help_text: str = HELP) -> None:
    h = ev.add_parser(
        name,
        help=help_text,
        description="Mask part of each HumanEval canonical solution, let the model fill it in from "
        "its FIM prompt, run the tests in the sandbox. Reports pass@1 and exact match "
        "per mode.",
    )
    h.add_argument(
        "--model",
        default=None,
        help="model path, hub id, .gguf or http(s)://HOST[:PORT]/v1 endpoint (which gets prompt + suffix "
        "on /v1/completions); 'default' or nothing: the offline default model",
    )
    h.add_argument(
        "--mode",
        default="all",
        choices=["single-line", "multi-line", "random-span", "all"],
        help="what to mask: one line, a block of 2-5 lines, a random character span, or all three "
        "(default: %(default)s)",
    )
    h.add_argument("--limit", type=int, default=None, help="only the first K problems (default: all 164)")
    h.add_argument("--seed", type=int, default=0, help="seed of the masks and of sampling (default: %(default)s)")
    h.add_argument(
        "--temperature", type=float, default=0.2, help="sampling temperature; 0: greedy (default: %(default)s)"
    )
    h.add_argument("--max-new-tokens", type=int, default=128, help="longest middle (default: %(default)s)")
    h.add_argument("--batch-size", type=int, default=8, help="prompts per generate_batch call (default: %(default)s)")
    add_backend_option(h)
    h.add_argument(
        "--threads", type=int, default=None, help="CPU threads for generation (default: the CPUs other jobs leave idle)"
    )
    h.add_argument("--workers", type=int, default=None, help="sandboxed programs at once (default: CPU count)")
    h.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per program, tests included (default: %(default)s)"
    )
    h.add_argument(
        "--output",
        default=None,
        help="results directory (default: .runs/eval/infill-NAME); rerun with the same one to resume",
    )
    h.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_endpoint_options(h, concurrency=True)
    h.set_defaults(func=_infill)


def _infill(args) -> int:
    from starchat.cli.eval import _slug
    from starchat.errors import StarchatError
    from starchat.eval.infill import MODES, InfillConfig, run_infill
    from starchat.eval.sandbox import Limits, sandbox_mode
    from starchat.inference.endpoint import is_endpoint

    for flag in ("limit", "max_new_tokens", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise StarchatError(f"--{flag.replace('_', '-')} {value}: must be >= 1")
    model = None if args.model in (None, "default") else args.model
    remote = is_endpoint(model)
    engine_kw = endpoint_kwargs(args)
    name = endpoint_slug(model, args.served_model) if remote else _slug(model or "default")
    out = Path(args.output or f".runs/eval/infill-{name}")
    modes = MODES if args.mode == "all" else (args.mode,)
    cfg = InfillConfig(
        output=out,
        modes=modes,
        limit=args.limit,
        seed=args.seed,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        workers=args.workers,
        limits=Limits(timeout=args.timeout, cpu_seconds=max(1, int(args.timeout + 0.999))),
        progress=not args.no_progress,
    )
    mode = sandbox_mode()
    if mode["warning"]:
        print(mode["warning"])
    from starchat.inference import load_engine

    engine = load_engine(model=model, backend=args.backend, **engine_kw)
    label = f"{engine.model_name} at {model}" if remote else model or "default"
    summary = run_infill(engine, cfg, label, model=model, on_start=print)
    for m, d in summary["per_mode"].items():
        if d["problems"]:
            print(
                f"{m}: pass@1 = {d['pass@1']:.4f}  exact match = {d['exact_match']:.4f}  "
                f"({d['problems']} problems, {summary['skipped'].get(m, 0)} with nothing to mask)"
            )
    print(f"report: {out / 'report.md'}  samples: {out / 'samples.jsonl'}  summary: {out / 'summary.json'}")
    return 0
