"""The eval registry (`starchat eval NAME`) and the summary.json contract every eval keeps.

The contract, which `starchat eval compare` relies on:

    Every eval run writes ``summary.json`` (into its --output directory; `eval loss` into its --output
    file): one JSON object with at least
      kind     the name of the eval that wrote it ("humaneval", "loss", "judge", "lm-eval", ...)
      metrics  a flat object: metric name -> number; `eval compare` shows these, one row each
    and optionally ``name`` or ``model`` (the run's column title) and ``per_task`` ({task: {n, correct}},
    from which compare lists the problems only one run solves). Everything else is the eval's own.

Adding an eval is one module with its runner (which calls `write_summary`) and its command's
``register(subparsers)``, plus one line in `EVALS`. Runners and commands are named by
``"module:attribute"``: this module imports neither, so the eval layer never imports the CLI above it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starchat.dotted import resolve
from starchat.errors import StarchatError
from starchat.fsio import write_text_atomic

CONTRACT = (
    "every run writes summary.json: a JSON object with 'kind' (the eval's name) and 'metrics' (a flat "
    "object of numbers, one row each here), optionally 'name' or 'model' (the column title) and "
    "'per_task'"
)


@dataclass(frozen=True)
class Eval:
    name: str
    """The subcommand, and the ``kind`` of the summaries it writes."""
    help: str
    runner: str
    """``module:function`` of the library entry point that runs it and writes summary.json."""
    command: str
    """``module:function`` adding ``starchat eval NAME`` to the CLI: ``register(subparsers, name, help)``."""

    def register(self, subparsers) -> None:
        resolve(self.command)(subparsers, self.name, self.help)


EVALS: dict[str, Eval] = {
    e.name: e
    for e in (
        Eval(
            "humaneval",
            "pass@k on HumanEval's 164 problems, run in a sandbox",
            "starchat.eval.humaneval:run_model",
            "starchat.cli.eval:register_humaneval",
        ),
        Eval(
            "loss",
            "validation loss and perplexity over assistant tokens",
            "starchat.eval.loss:eval_loss",
            "starchat.cli.eval:register_loss",
        ),
        Eval(
            "judge",
            "pairwise judge: answers of 2+ models to coding prompts, judged by a model",
            "starchat.eval.judge:run_judge",
            "starchat.cli.eval_judge:register_judge",
        ),
        Eval(
            "lm-eval",
            "lm-evaluation-harness tasks (the Open LLM Leaderboard's and any other)",
            "starchat.eval.leaderboard:run_lm_eval",
            "starchat.cli.eval_judge:register_lm_eval",
        ),
        Eval(
            "infill",
            "fill-in-the-middle: HumanEval lines and spans filled from the model's FIM prompt, sandboxed",
            "starchat.eval.infill:run_infill",
            "starchat.cli.eval_infill:register_infill",
        ),
    )
}


def check_summary(data: Any, where: str | Path, require_kind: bool = True) -> dict[str, Any]:
    """``data`` if it keeps the contract, else one line naming ``where`` and the field at fault.

    Reading, ``require_kind=False`` takes a summary without ``kind`` too (shown as "?"), as compare always has."""
    if not isinstance(data, dict):
        raise StarchatError(f"{where}: expected a JSON object with 'kind' and 'metrics'")
    if (require_kind or "kind" in data) and (not isinstance(data.get("kind"), str) or not data["kind"]):
        raise StarchatError(
            f"{where}: field 'kind' must name the eval that wrote it (e.g. humaneval); "
            "is it a summary written by `starchat eval`?"
        )
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise StarchatError(
            f"{where}: field 'metrics' must be a flat object of numbers; is it a summary written by `starchat eval`?"
        )
    return data


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """Check ``summary`` against the contract, then write it atomically to ``path``."""
    check_summary(summary, path)
    write_text_atomic(Path(path), json.dumps(summary, indent=2))
    return Path(path)
