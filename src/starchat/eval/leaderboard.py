"""`starchat eval lm-eval`: Open LLM Leaderboard (and any lm-evaluation-harness) tasks through `lm_eval.simple_evaluate`.

lm-evaluation-harness is an optional extra (``pip install 'starchat[lm-eval]'``); it is imported only
here, inside the functions. Models: a transformers directory or hub id (lm-eval's ``hf`` model), a
.gguf file (``hf`` with ``gguf_file``, dequantized by transformers), or an OpenAI-compatible endpoint
``http(s)://HOST/v1`` (``local-completions``, or ``local-chat-completions`` with ``--endpoint-api chat``).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
from datetime import UTC, datetime
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
    if fewshot is not None and fewshot < 0:
        raise StarchatError(
            f"--num-fewshot {fewshot}: give 0 or more examples per prompt (or leave it out for each task's own count)"
        )
    out: list[tuple[str, int | None]] = []
    for name in names:
        for task in LEADERBOARD if name == "leaderboard" else [name]:
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


def check_data(manager, plan: list[tuple[str, int | None]], limit: float | None) -> None:
    """Load every task's data before the model, and check multiple-choice documents, so a task that cannot
    run is one line naming it rather than a traceback after the model has loaded (or, for an answer index
    past the choices, a document silently scored wrong: lm-eval only logs a warning)."""
    for task, shots in plan:
        try:
            loaded = _load_tasks(manager, task)
        except Exception as e:  # noqa: BLE001  (datasets, fsspec, jinja and hub errors alike: the task cannot load)
            raise StarchatError(
                f"lm-eval task {task!r}: its data could not be loaded ({_first_line(e)}); a hub "
                "data set must be fetched once with network access (HF_DATASETS_OFFLINE unset) "
                "or cached already; a local one: check dataset_path/data_files in its YAML"
            ) from None
        for name, obj in loaded:
            _check_documents(name, obj, limit, shots)


def _load_tasks(manager, task: str) -> list[tuple[str, Any]]:
    """(name, Task) for every task ``task`` names (a group's or tag's members), its data loaded."""
    if hasattr(manager, "load"):  # lm-eval >= 0.4.10: flat dicts of tasks and groups
        flat = manager.load([task])
        if isinstance(flat, dict) and isinstance(flat.get("tasks"), dict):
            return list(flat["tasks"].items())
    return _leaf_tasks(manager.load_task_or_group([task]))


def _leaf_tasks(loaded) -> list[tuple[str, Any]]:
    """(name, Task) for every task under what load_task_or_group returned (groups nest dicts of tasks)."""
    out = []
    for key, val in loaded.items():
        if isinstance(val, dict):
            out += _leaf_tasks(val)
        elif val is not None and hasattr(val, "OUTPUT_TYPE"):
            out.append((getattr(key, "group_name", None) or str(key), val))
    return out


MAX_CHECKED_DOCS = 100_000  # per task: rendering choices costs about 0.1 ms a document


def _check_documents(name: str, task, limit: float | None, shots: int | None) -> None:
    if getattr(task, "OUTPUT_TYPE", None) != "multiple_choice":
        return
    docs = list(itertools.islice(task.eval_docs, MAX_CHECKED_DOCS))
    if limit is not None:  # only the documents that will be evaluated
        docs = docs[: int(limit) if limit >= 1 else math.ceil(len(docs) * limit)]
    sets = [("document", docs)]
    few = task.fewshot_docs() if (shots or getattr(task.config, "num_fewshot", 0) or 0) > 0 else None
    if few is not None:
        sets.append(("few-shot document", list(itertools.islice(few, MAX_CHECKED_DOCS))))
    for what, rows in sets:
        for i, doc in enumerate(rows):
            try:
                problem = _doc_problem(task, doc)
            except Exception as e:  # noqa: BLE001  (a template naming a missing field, a target of another type)
                problem = f"its choices or answer cannot be read ({_first_line(e)})"
            if problem:
                raise StarchatError(
                    f"lm-eval task {name!r}, {what} {i}: {problem}; fix the data "
                    "(dataset_path/data_files in the task's YAML) or drop the document"
                )


def _doc_problem(task, doc) -> str | None:
    choices = task.doc_to_choice(doc)
    if not isinstance(choices, (list, tuple)) or not choices:
        return f"no answer choices ({choices!r})"
    target = task.doc_to_target(doc)
    for gold in target if isinstance(target, list) else [target]:
        if isinstance(gold, str) and not gold.isdigit() and gold not in choices:
            return f"answer {gold[:60]!r} is none of its {len(choices)} choices"
        if isinstance(gold, int) or (isinstance(gold, str) and gold.isdigit() and gold not in choices):
            idx = int(gold)
            if not 0 <= idx < len(choices):
                return f"answer index {idx} is past its {len(choices)} choices (0 to {len(choices) - 1})"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


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
    args: dict[str, Any] = {
        "base_url": f"{base}/{'chat/completions' if cfg.endpoint_api == 'chat' else 'completions'}",
        "model": name,
        "num_concurrent": 4,
        "max_retries": 3,
        "tokenized_requests": False,
    }
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
    plan = expand_tasks(cfg.tasks, cfg.num_fewshot)  # bad options are refused before the extra is needed
    lm_eval, TaskManager = _lm_eval()
    from lm_eval.api.registry import get_model

    manager = TaskManager(include_path=[str(Path(p).resolve()) for p in cfg.include_path] or None)
    check_tasks(manager, [t for t, _ in plan])
    name, args = model_spec(cfg)
    check_data(manager, plan, cfg.limit)
    device = cfg.device or _default_device()
    lm = get_model(name).create_from_arg_obj(args, {"batch_size": cfg.batch_size, "device": device})
    cfg.output.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {}
    for shots in dict.fromkeys(s for _, s in plan):  # one simple_evaluate per few-shot count, same model
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=[t for t, s in plan if s == shots],
            num_fewshot=shots,
            limit=cfg.limit,
            apply_chat_template=cfg.apply_chat_template,
            fewshot_as_multiturn=cfg.fewshot_as_multiturn and cfg.apply_chat_template,
            system_instruction=cfg.system,
            task_manager=manager,
            use_cache=str(cfg.output / "cache" / "requests"),
            log_samples=False,
            bootstrap_iters=cfg.bootstrap_iters,
            random_seed=cfg.seed,
            numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed,
            fewshot_random_seed=cfg.seed,
        )
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
    return {
        "kind": "lm-eval",
        "model": cfg.model or "default",
        "metrics": metrics,
        "tasks": tasks,
        "lm_eval_model": model_type,
        "model_args": {k: str(v) for k, v in args.items()},
        "n_shot": results.get("n-shot", {}),
        "n_samples": results.get("n-samples", {}),
        "apply_chat_template": cfg.apply_chat_template,
        "limit": cfg.limit,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# lm-eval: {summary['model']}",
        "",
        f"lm-eval model `{summary['lm_eval_model']}`; chat template: {summary['apply_chat_template']}; "
        f"limit: {summary['limit']}",
        "",
        "| task | shots | metric | value | stderr |",
        "| --- | --- | --- | --- | --- |",
    ]
    for task, vals in summary["tasks"].items():
        for metric, val in vals.items():
            if metric.endswith("_stderr") or "_stderr/" in metric:
                continue
            err = vals.get(metric.replace("/", "_stderr/", 1) if "/" in metric else f"{metric}_stderr")
            lines.append(
                f"| {task} | {summary['n_shot'].get(task, '-')} | {metric} | {val:.4f} | "
                f"{'-' if not isinstance(err, float) else f'{err:.4f}'} |"
            )
    return "\n".join(lines) + "\n"
