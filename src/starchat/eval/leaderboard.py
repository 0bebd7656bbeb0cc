"""`starchat eval lm-eval`: Open LLM Leaderboard (and any lm-evaluation-harness) tasks through `lm_eval.simple_evaluate`.

lm-evaluation-harness is an optional extra (``pip install 'starchat[lm-eval]'``); it is imported only
here, inside the functions. Models: a transformers directory or hub id (lm-eval's ``hf`` model), a
.gguf file (``hf`` with ``gguf_file``, dequantized by transformers), or an OpenAI-compatible endpoint
``http(s)://HOST/v1`` (``local-completions``, or ``local-chat-completions`` with ``--endpoint-api chat``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.eval.registry import write_summary
from starchat.fsio import write_text_atomic

# The Open LLM Leaderboard (v1) tasks the StarChat Beta card cites, with the leaderboard's few-shot counts.
LEADERBOARD = {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0}
INSTALL = "pip install 'starchat[lm-eval]'  (or: pip install 'lm-eval[api]>=0.4.9,<0.5')"


@dataclasses.dataclass
class LmEvalConfig:
    """One lm-eval run."""

    model: str | None  # None/"default": the offline default GGUF
    tasks: list[str]  # task, group or tag names; "leaderboard" is the four tasks above
    output: Path
    num_fewshot: int | None = None  # None: the leaderboard's count for its tasks, else the task's own
    apply_chat_template: bool = False  # render each request with the model's chat template
    fewshot_as_multiturn: bool = True  # with the chat template: each shot is a user/assistant turn
    system: str | None = None  # system instruction
    limit: float | None = None  # documents per task (a fraction if < 1)
    batch_size: int | str = 1
    device: str | None = None  # default: cuda if available, else cpu
    include_path: list[str] = dataclasses.field(default_factory=list)  # folders of custom task YAMLs
    served_model: str | None = None  # endpoint: the model name (default: the first of /v1/models)
    endpoint_api: str = "completions"  # endpoint: completions (log-likelihood tasks) or chat (generation only)
    tokenizer: str | None = None  # endpoint: a tokenizer (dir or hub id) for local token counting
    bootstrap_iters: int = 1000  # lm-eval's stderr resamples for metrics without a closed form
    seed: int = 0


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise StarchatError(f"`starchat eval lm-eval` needs lm-evaluation-harness: {INSTALL}") from None
    import lm_eval as module

    return module, TaskManager


def expand_tasks(names: list[str], fewshot: int | None) -> list[tuple[str, int | None]]:
    """``(task, num_fewshot)`` pairs: ``leaderboard`` expands to its four tasks; a leaderboard task takes
    the leaderboard's count unless ``--num-fewshot`` is given."""
    out: list[tuple[str, int | None]] = []
    for name in names:
        for task in (LEADERBOARD if name == "leaderboard" else [name]):
            if task not in (t for t, _ in out):
                out.append((task, fewshot if fewshot is not None else LEADERBOARD.get(task)))
    if not out:
        raise StarchatError("no lm-eval task given: --tasks arc_challenge,hellaswag (or 'leaderboard')")
    return out


def check_tasks(manager, tasks: list[str]) -> None:
    """Every name must be a task, group or tag lm-eval knows (its own or under --include-path)."""
    known = set(manager.all_tasks)
    for t in tasks:
        if t not in known and not manager.match_tasks([t]):
            close = difflib.get_close_matches(t, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "list them with `lm-eval ls tasks`"
            raise StarchatError(f"unknown lm-eval task {t!r}: {hint} (custom task YAMLs: --include-path DIR)")


def model_spec(cfg: LmEvalConfig) -> tuple[str, dict[str, Any]]:
    """lm-eval's model name and arguments for ``cfg.model``."""
    model = cfg.model
    if model in (None, "", "default"):
        from starchat.inference.loader import default_model_path

        model = default_model_path()
    if model.startswith(("http://", "https://")):
        return _endpoint_spec(cfg, model.rstrip("/"))
    model = os.path.expanduser(model)
    args: dict[str, Any] = {"pretrained": model, "dtype": "auto"}
    if model.endswith(".gguf"):
        if not os.path.isfile(model):
            raise StarchatError(f"model file {model!r} does not exist")
        args.update(pretrained=os.path.dirname(model) or ".", gguf_file=os.path.basename(model))
    elif model.startswith((".", "/", "~")) and not os.path.isdir(model):
        raise StarchatError(f"model path {model!r} does not exist: give a model directory, .gguf file, hub id or URL")
    return "hf", args


def _endpoint_spec(cfg: LmEvalConfig, base: str) -> tuple[str, dict[str, Any]]:
    if cfg.endpoint_api not in ("completions", "chat"):
        raise StarchatError(f"--endpoint-api {cfg.endpoint_api!r}: use completions or chat")
    if cfg.endpoint_api == "chat" and not cfg.apply_chat_template:
        raise StarchatError("--endpoint-api chat sends messages, so it needs --apply-chat-template")
    name = cfg.served_model or _first_served_model(base)
    args: dict[str, Any] = {"base_url": f"{base}/{'chat/completions' if cfg.endpoint_api == 'chat' else 'completions'}",
                            "model": name, "num_concurrent": 4, "max_retries": 3, "tokenized_requests": False}
    if cfg.tokenizer:
        args.update(tokenizer=cfg.tokenizer, tokenizer_backend="huggingface")
    elif cfg.endpoint_api == "completions":
        args["tokenizer_backend"] = "auto"  # the server's /tokenize if it has one, else the hub tokenizer of `model`
    return ("local-chat-completions" if cfg.endpoint_api == "chat" else "local-completions"), args


def _first_served_model(base: str) -> str:
    import urllib.request

    req = urllib.request.Request(f"{base}/models")
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read(1 << 20))["data"][0]["id"]
    except Exception as e:  # noqa: BLE001  (any failure means: say which model)
        raise StarchatError(f"{base}/models did not name a model ({e}); pass --served-model NAME") from None


def run_lm_eval(cfg: LmEvalConfig) -> dict[str, Any]:
    """Run the tasks, write ``results.json`` (lm-eval's), ``summary.json`` (kind "lm-eval") and ``report.md``.

    Requests are cached in ``OUTPUT/cache`` (lm-eval's sqlite cache), so a rerun after an interruption
    recomputes only what was not finished.
    """
    lm_eval, TaskManager = _lm_eval()
    from lm_eval.api.registry import get_model

    plan = expand_tasks(cfg.tasks, cfg.num_fewshot)
    manager = TaskManager(include_path=[str(Path(p).resolve()) for p in cfg.include_path] or None)
    check_tasks(manager, [t for t, _ in plan])
    name, args = model_spec(cfg)
    device = cfg.device or _default_device()
    lm = get_model(name).create_from_arg_obj(args, {"batch_size": cfg.batch_size, "device": device})
    cfg.output.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {}
    for shots in dict.fromkeys(s for _, s in plan):  # one simple_evaluate per few-shot count, same model
        res = lm_eval.simple_evaluate(
            model=lm, tasks=[t for t, s in plan if s == shots], num_fewshot=shots, limit=cfg.limit,
            apply_chat_template=cfg.apply_chat_template,
            fewshot_as_multiturn=cfg.fewshot_as_multiturn and cfg.apply_chat_template,
            system_instruction=cfg.system, task_manager=manager, use_cache=str(cfg.output / "cache" / "requests"),
            log_samples=False, bootstrap_iters=cfg.bootstrap_iters, random_seed=cfg.seed,
            numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)
        if res is None:  # a non-zero rank of a distributed run
            continue
        for key in ("results", "groups", "n-shot", "n-samples", "versions", "higher_is_better"):
            merged.setdefault(key, {}).update(res.get(key) or {})
    summary = summarize(merged, cfg, name, args)
    write_text_atomic(cfg.output / "results.json", json.dumps(merged, indent=2, default=str))
    write_summary(cfg.output / "summary.json", summary)
    write_text_atomic(cfg.output / "report.md", markdown(summary))
    return summary


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def summarize(results: dict[str, Any], cfg: LmEvalConfig, model_type: str, args: dict[str, Any]) -> dict[str, Any]:
    """The summary every `starchat eval` run writes: ``kind``, a flat ``metrics`` dict and the settings.

    Metric names are ``METRIC[TASK]`` (e.g. ``acc_norm[arc_challenge]``, ``acc_norm_stderr[...]``),
    from lm-eval's ``"acc_norm,none"`` keys; other filters than ``none`` keep theirs
    (``exact_match,strict-match`` -> ``exact_match/strict-match[gsm8k]``).
    """
    metrics: dict[str, float] = {}
    tasks: dict[str, dict[str, Any]] = {}
    for section in ("results", "groups"):
        for task, vals in (results.get(section) or {}).items():
            for key, val in vals.items():
                if "," not in key or not isinstance(val, (int, float)) or isinstance(val, bool):
                    continue
                metric, flt = key.split(",", 1)
                name = metric if flt == "none" else f"{metric}/{flt}"
                metrics[f"{name}[{task}]"] = round(float(val), 6)
                tasks.setdefault(task, {})[name] = float(val)
    return {"kind": "lm-eval", "model": cfg.model or "default", "metrics": metrics, "tasks": tasks,
            "lm_eval_model": model_type, "model_args": {k: str(v) for k, v in args.items()},
            "n_shot": results.get("n-shot", {}), "n_samples": results.get("n-samples", {}),
            "apply_chat_template": cfg.apply_chat_template, "limit": cfg.limit,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# lm-eval: {summary['model']}", "",
             f"lm-eval model `{summary['lm_eval_model']}`; chat template: {summary['apply_chat_template']}; "
             f"limit: {summary['limit']}", "", "| task | shots | metric | value | stderr |", "| --- | --- | --- | --- | --- |"]
    for task, vals in summary["tasks"].items():
        for metric, val in vals.items():
            if metric.endswith("_stderr") or "_stderr/" in metric:
                continue
            err = vals.get(metric.replace("/", "_stderr/", 1) if "/" in metric else f"{metric}_stderr")
            lines.append(f"| {task} | {summary['n_shot'].get(task, '-')} | {metric} | {val:.4f} | "
                         f"{'-' if not isinstance(err, float) else f'{err:.4f}'} |")
    return "\n".join(lines) + "\n"
