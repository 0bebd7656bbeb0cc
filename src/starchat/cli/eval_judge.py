"""`starchat eval judge` and `starchat eval lm-eval`: their options (named in `starchat.eval.registry`)."""

from __future__ import annotations

from pathlib import Path

from starchat.cli.endpoint_options import add_backend_option


def register_judge(ev, name: str, help_text: str) -> None:
    from starchat.eval.judge import JudgeConfig
    from starchat.options import add_arguments

    j = ev.add_parser(
        name,
        help=help_text,
        description="Answer a prompt set with every --model, judge each pair of answers in both "
        "orders with --judge, and report win/tie/loss with 95% bootstrap intervals.",
    )
    j.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]MODEL",
        help="a model to compare (path, hub id, .gguf, http(s)://HOST/v1 or 'default'); "
        "give it twice or more; NAME= labels it",
    )
    j.add_argument(
        "--judge",
        default="default",
        help="the judge model, taken like --model (default: the offline "
        "default model; a strong judge is e.g. an endpoint)",
    )
    add_arguments(j, JudgeConfig)  # flags, defaults and help from the dataclass
    add_backend_option(j)
    j.add_argument(
        "--output",
        default=None,
        help="results directory (default .runs/eval/judge-A-vs-B...); rerun with the same one to resume",
    )
    j.set_defaults(func=_judge)


def _judge(args) -> int:
    from starchat.eval.judge import JudgeConfig, parse_models, run_judge
    from starchat.inference import load_engine
    from starchat.options import from_args

    models = parse_models(args.model)
    out = Path(args.output or f".runs/eval/judge-{'-vs-'.join(models)}")
    cfg = from_args(JudgeConfig, args, output=out)

    def load(spec):
        return load_engine(model=None if spec in (None, "default") else spec, backend=args.backend)

    summary = run_judge(cfg, models, args.judge, load)
    m = summary["metrics"]
    for p in summary["pairs"]:
        ci = p["ci95"].get("win_rate")
        rate = "-" if p["win_rate"] is None else f"{p['win_rate']:.3f}"
        ci_s = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        c = p["counts"]
        print(
            f"{p['a']} vs {p['b']}: {c['win']} wins, {c['tie']} ties, {c['loss']} losses; "
            f"win rate {rate}{ci_s} over {p['prompts']} prompts"
        )
    if "position_bias_rate" in m:
        print(
            f"position-bias rate: {m['position_bias_rate']:.3f}; unparsed verdicts: "
            f"{summary['judgments']['unparsed']}/{summary['judgments']['total']}"
        )
    print(f"report: {out / 'report.md'}  summary: {out / 'summary.json'}")
    return 0


def register_lm_eval(ev, name: str, help_text: str) -> None:
    from starchat.eval.leaderboard import INSTALL, LmEvalConfig

    e = ev.add_parser(
        name, help=help_text, description=f"Run lm-evaluation-harness tasks on a model. Needs the extra: {INSTALL}"
    )
    e.add_argument(
        "--model",
        default="default",
        help="HF model dir or hub id, .gguf, http(s)://HOST/v1 or 'default' (default: the offline default model)",
    )
    e.add_argument(
        "--tasks",
        required=True,
        help="comma-separated lm-eval task/group names; 'leaderboard' = "
        "arc_challenge (25-shot), hellaswag (10), mmlu (5), truthfulqa_mc2 (0)",
    )
    e.add_argument("--num-fewshot", type=int, default=None, help="override every task's few-shot count")
    e.add_argument("--apply-chat-template", action="store_true", help="render requests with the model's chat template")
    e.add_argument(
        "--no-fewshot-as-multiturn",
        action="store_true",
        help="with the chat template, put the shots in one user turn instead of one turn each",
    )
    e.add_argument("--system", default=None, help="system instruction")
    e.add_argument("--limit", type=float, default=None, help="documents per task (a fraction if < 1)")
    e.add_argument("--batch-size", default="1", help="lm-eval batch size (a number or 'auto')")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:0... (default: cuda if available)")
    e.add_argument("--include-path", action="append", default=[], help="a folder of custom task YAMLs")
    e.add_argument("--served-model", default=None, help="endpoint: the model name (default: first of /v1/models)")
    e.add_argument(
        "--endpoint-api",
        default="completions",
        choices=("completions", "chat"),
        help="endpoint: completions (log-likelihood tasks need prompt logprobs, as vLLM gives) or chat",
    )
    e.add_argument("--tokenizer", default=None, help="endpoint: tokenizer dir or hub id for token counting")
    e.add_argument("--seed", type=int, default=LmEvalConfig.seed, help="seed of lm-eval's sampling and few-shot choice")
    e.add_argument("--output", default=None, help="results directory (default .runs/eval/lm-eval-NAME)")
    e.set_defaults(func=_lm_eval)


def _lm_eval(args) -> int:
    from starchat.eval.judge import model_label
    from starchat.eval.leaderboard import LmEvalConfig, run_lm_eval

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bs = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    out = Path(args.output or f".runs/eval/lm-eval-{model_label(args.model)}")
    cfg = LmEvalConfig(
        model=args.model,
        tasks=tasks,
        output=out,
        num_fewshot=args.num_fewshot,
        apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=not args.no_fewshot_as_multiturn,
        system=args.system,
        limit=int(args.limit) if args.limit and args.limit >= 1 else args.limit,
        batch_size=bs,
        device=args.device,
        include_path=args.include_path,
        served_model=args.served_model,
        endpoint_api=args.endpoint_api,
        tokenizer=args.tokenizer,
        seed=args.seed,
    )
    summary = run_lm_eval(cfg)
    for key, val in summary["metrics"].items():
        if "_stderr" not in key:
            print(f"{key} = {val:.4f}")
    print(f"report: {out / 'report.md'}  summary: {out / 'summary.json'}  results: {out / 'results.json'}")
    return 0
