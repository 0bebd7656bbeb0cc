"""`starchat eval`: HumanEval in a sandbox (from a model or a samples file), validation loss, comparing runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starchat.cli.endpoint_options import add_endpoint_options, endpoint_kwargs, endpoint_slug


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model: HumanEval in a sandbox, validation loss",
                       description="Evaluate a model or completions.")
    ev = p.add_subparsers(dest="eval_command", metavar="WHAT", required=True)

    h = ev.add_parser("humaneval", help="pass@k on HumanEval's 164 problems, run in a sandbox",
                      description="Generate with --model (default: the offline SmolLM2 GGUF) or score --samples.")
    src = h.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="model path, hub id, .gguf or http(s)://HOST[:PORT]/v1 endpoint; 'default' or nothing: "
                          "the offline default model")
    src.add_argument("--samples", default=None,
                     help="JSONL of task_id + completion (human-eval's format): score them, load no model")
    h.add_argument("--n-samples", type=int, default=1, help="samples per problem (pass@k needs n >= k)")
    h.add_argument("--temperature", type=float, default=0.2)
    h.add_argument("--max-new-tokens", type=int, default=512)
    h.add_argument("--limit", type=int, default=None, help="only the first K problems")
    h.add_argument("--prefill", action="store_true",
                   help="start the answer with an open ```python fence and the prompt, so the model writes the body")
    h.add_argument("--system", default=None, help="a system message for the chat prompt")
    h.add_argument("--batch-size", type=int, default=8, help="prompts per generate_batch call")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--backend", default="auto", help="inference backend (auto, transformers, llama.cpp, vllm)")
    h.add_argument("--threads", type=int, default=None,
                   help="CPU threads for generation (default: the CPUs this process may use that other jobs leave idle)")
    h.add_argument("--workers", type=int, default=None, help="sandboxed programs at once (default: CPU count)")
    h.add_argument("--timeout", type=float, default=10.0, help="seconds per program, tests included")
    h.add_argument("--output", default=None, help="results directory (default .runs/eval/humaneval-NAME); "
                                                 "rerun with the same one to resume")
    h.add_argument("--no-progress", action="store_true")
    h.add_argument("--problems", default=None,
                   help="problem set: a human-eval/evalplus JSONL(.gz) or JSON file, a saved dataset, a hub ID "
                        "(org/name[#split], e.g. evalplus/humanevalplus) or a built-in name (default: humaneval)")
    add_endpoint_options(h, concurrency=True)
    h.set_defaults(func=_humaneval)

    lo = ev.add_parser("loss", help="validation loss and perplexity over assistant tokens")
    lo.add_argument("--model", required=True, help="a transformers checkpoint (directory or hub id)")
    lo.add_argument("--data", required=True, help="a directory written by `starchat data build`")
    lo.add_argument("--split", default="test")
    lo.add_argument("--batch-size", type=int, default=4)
    lo.add_argument("--max-length", type=int, default=2048)
    lo.add_argument("--template", default="starchat", help="chat format the model was trained with")
    lo.add_argument("--limit", type=int, default=None, help="only the first N dialogues")
    lo.add_argument("--output", default=None, help="also write the result to this JSON file")
    lo.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: the CPUs this process may use that other jobs leave idle)")
    lo.set_defaults(func=_loss)

    from starchat.cli.eval_infill import register_infill
    from starchat.cli.eval_judge import register_judge, register_lm_eval

    register_judge(ev)
    register_lm_eval(ev)
    register_infill(ev)

    c = ev.add_parser("compare", help="two or more runs of any kind in one table",
                      description="Runs of `eval humaneval`, `eval loss --output` and any other summary.json with "
                                  "'kind' and 'metrics'; changes are against the first run.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="a run directory or its summary.json (two or more)")
    c.add_argument("--markdown", action="store_true", help="print a markdown table")
    c.add_argument("--card", default=None, metavar="MODEL_DIR",
                   help="also write the table into this trained model's card (README.md), under 'Evaluation: "
                        "before and after'; a rerun with the same --card-title replaces its section")
    c.add_argument("--card-title", default=None,
                   help="the card section's title (default: the runs' names and kind)")
    c.set_defaults(func=_compare)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text.rstrip("/")).name or text).strip("-") or "run"


def _humaneval(args) -> int:
    from starchat.eval.humaneval import HumanEvalConfig, run_model, score_samples
    from starchat.eval.sandbox import Limits, sandbox_mode

    from starchat.inference.endpoint import is_endpoint

    model = None if args.model in (None, "default") else args.model
    remote = is_endpoint(model)
    if remote and args.prefill:
        from starchat.errors import StarchatError

        raise StarchatError("--prefill writes the start of the answer in the model's own chat format, which an "
                            "endpoint keeps to itself: run without --prefill, or evaluate the model locally")
    engine_kw = endpoint_kwargs(args)
    name = _slug(args.samples) if args.samples else (endpoint_slug(model, args.served_model) if remote
                                                      else _slug(model or "default"))
    if args.problems and not args.output:
        name += "-" + _slug(args.problems)
    out = Path(args.output or f".runs/eval/humaneval-{name}")
    cfg = HumanEvalConfig(output=out, n_samples=args.n_samples, temperature=args.temperature,
                          max_new_tokens=args.max_new_tokens, limit=args.limit, prefill=args.prefill,
                          system=args.system, batch_size=args.batch_size, seed=args.seed, workers=args.workers,
                          limits=Limits(timeout=args.timeout, cpu_seconds=max(1, int(args.timeout + 0.999))),
                          progress=not args.no_progress, problems_file=args.problems)
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
    from starchat.eval.report import write_atomic

    res = eval_loss(LossConfig(model=args.model, data=args.data, split=args.split, batch_size=args.batch_size,
                               max_length=args.max_length, template=args.template, limit=args.limit))
    if res["added_tokens"]:
        print(f"{args.model} has no dialogue tokens: added {' '.join(res['added_tokens'])} as `starchat train` does "
              "(new embedding rows at the mean of the others)")
    print(f"loss = {res['loss']:.4f}  perplexity = {res['perplexity']:.2f}  "
          f"end-token accuracy = {res['end_token_accuracy']:.3f}  "
          f"({res['assistant_tokens']} assistant tokens in {res['dialogues']} dialogues, split {res['split']})")
    if args.output:
        write_atomic(Path(args.output), json.dumps(res, indent=2))
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
