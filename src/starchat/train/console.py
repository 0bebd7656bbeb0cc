"""What a training run says: its data and plan before the first step, a bar and one line per log, the key figures.

Printed with rich on stderr by the main process only. In a terminal there is a progress bar; anywhere
else (CI, a pipe, a file) plain lines with no control characters. Warnings go through the
`starchat.train` loggers, so a library caller can catch them and the CLI prints them loudly.
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

logger = logging.getLogger("starchat.train.console")

# Below this share of the dialogues a split holds, the run says loudly how much is left out and why.
KEPT_WARN_SHARE = 0.9
# End-token accuracy under this: greedy generation often never emits <|end|> and runs to the token limit.
END_TOKEN_WARN = 0.9
_SKIP = ("_runtime", "_per_second", "total_flos", "step")
_NAMES = {
    "loss": "loss",
    "grad_norm": "grad norm",
    "learning_rate": "lr",
    "num_input_tokens_seen": "tokens",
    "eval_loss": "loss",
    "eval_perplexity": "perplexity",
    "eval_token_accuracy": "token accuracy",
    "eval_end_token_accuracy": "end-token accuracy",
    "train_tokens_per_second": "tokens/s",
}


def number(value) -> str:
    """A readable number: 12,345 for counts, 1.23e-04 for small rates, 4 significant digits otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _split_stats(stats: dict, name: str) -> dict:
    s = (stats or {}).get(f"{name}_tokenize")
    return s if isinstance(s, dict) else {}


def data_lines(cfg, stats: dict) -> list[str]:
    """What the run trains and evaluates on: dialogues read, kept, dropped (and why), tokens."""
    lines = []
    for name, split in (("train", cfg.data.train_split), ("eval", cfg.data.test_split)):
        s = _split_stats(stats, name)
        if not s:
            continue
        read = stats.get(f"{name}_read", s.get("dialogues", s.get("pairs", 0)))
        used = s.get("dialogues", s.get("pairs", read))
        dropped = {"max_samples": read - used} if read > used else {}
        for why, n in (s.get("dropped") or {}).items():
            if n:
                dropped[why] = n
        if s.get("dropped_too_long"):
            dropped["too_long"] = s["dropped_too_long"]
        why = ", ".join(f"{n:,} {w.replace('_', ' ')}" for w, n in dropped.items())
        line = (
            f"{name}: {read:,} read from {cfg.data.dataset} [{split}], {s.get('kept', 0):,} kept"
            + (f" (dropped: {why})" if why else "")
            + f", {s.get('tokens', 0):,} tokens"
        )
        if s.get("trained_tokens"):
            line += f" ({s['trained_tokens']:,} trained)"
        if s.get("truncated_dialogues"):
            line += f", {s['truncated_dialogues']:,} truncated to data.max_length {cfg.data.max_length}"
        pack = (stats or {}).get(f"{name}_pack")
        if isinstance(pack, dict) and "rows" in pack:
            line += f", packed into {pack['rows']:,} rows of {pack.get('block_size', cfg.data.block_size)}"
        lines.append(line)
    return lines


def data_warning(cfg, stats: dict) -> str | None:
    """A loud line when the run trains on under KEPT_WARN_SHARE of the training split: numbers and fields."""
    s = _split_stats(stats, "train")
    read = stats.get("train_read") if stats else None
    if not s or not read or s.get("kept", 0) >= KEPT_WARN_SHARE * read:
        return None
    d = cfg.data
    used = s.get("dialogues", read)
    causes, fixes = [], []
    if used < read:
        causes.append(f"data.max_train_samples {d.max_train_samples} left out {read - used:,}")
        fixes.append(f"raise data.max_train_samples to {read} or remove it")
    too_long = (s.get("dropped") or {}).get("too_long", 0) + s.get("dropped_too_long", 0)
    if too_long:
        causes.append(
            f"{too_long:,} were longer than data.max_length {d.max_length} tokens and data.truncation "
            f"{d.truncation!r} skips them"
        )
        fixes.append("raise data.max_length (up to the model's context; longer rows make slower steps)")
    lost = (s.get("dropped") or {}).get("no_assistant_tokens", 0)
    if lost:
        causes.append(f"{lost:,} kept no assistant token after truncation to data.max_length {d.max_length}")
        if not too_long:
            fixes.append("raise data.max_length")
    return (
        f"training on {s.get('kept', 0):,} of the {read:,} dialogues in {d.dataset} [{d.train_split}] "
        f"({100 * s.get('kept', 0) / read:.0f}%): "
        + "; ".join(causes)
        + ". To train on more: "
        + "; ".join(fixes)
        + "."
    )


def plan_line(args, state) -> str:
    """Steps, batch, devices and threads, as the Trainer resolved them."""
    import torch

    world = max(getattr(args, "world_size", 1), 1)
    device = str(getattr(args, "device", "cpu"))
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name(torch.device(device))}"
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    epochs = number(float(state.num_train_epochs)) if state.num_train_epochs else "?"
    plural = "" if epochs == "1" else "s"
    return (
        f"run: {state.max_steps:,} steps (over {epochs} epoch{plural}, {batch} rows per step = "
        f"{args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} accumulated x "
        f"{world} device{'s' if world > 1 else ''}) on {device}, {torch.get_num_threads()} CPU threads per "
        f"process; checkpoints in {args.output_dir}"
    )


def log_line(logs: dict, step: int, max_steps: int) -> str | None:
    """One readable line for a Trainer log: numbers with their names; None for the end-of-training totals."""
    if "train_loss" in logs:  # the end-of-training totals: end_lines says them
        return None
    is_eval = any(k.startswith("eval_") for k in logs)
    parts = []
    for key, value in logs.items():
        if key == "epoch" or (key.endswith(_SKIP) and key not in _NAMES) or not isinstance(value, (int, float)):
            continue
        name = _NAMES.get(key) or key.removeprefix("eval_").replace("_", " ")
        parts.append(f"{name} {number(value)}")
    epoch = f"  epoch {number(float(logs['epoch']))}" if "epoch" in logs else ""
    head = f"eval at step {step:,}/{max_steps:,}" if is_eval else f"step {step:,}/{max_steps:,}"
    return f"{head}{epoch}  " + "  ".join(parts)


def best_eval(log_history: list[dict], best_metric: float | None) -> dict | None:
    """The evaluation the final model comes from: the best checkpoint's, else the last one."""
    evals = [e for e in log_history if "eval_loss" in e]
    if not evals:
        return None
    if best_metric is not None:
        for e in evals:
            if e["eval_loss"] == best_metric:
                return e
    return evals[-1]


def end_token_warning(log_history: list[dict], best_metric: float | None) -> str | None:
    """A plain warning when the final model has not learned to end its replies."""
    e = best_eval(log_history, best_metric)
    acc = e.get("eval_end_token_accuracy") if e else None
    if acc is None or acc >= END_TOKEN_WARN:
        return None
    return (
        f"the model has not learned to stop: end-token accuracy {acc:.2f} on the validation set (the share of "
        "replies whose <|end|> is its top prediction; 1.0 ends every reply). In chat it will run on to the "
        "token limit. Train longer (training.num_train_epochs or training.max_steps), or let the new tokens "
        "learn faster with training.new_token_lr_multiplier (recipes/nano-cpu.yaml uses 50)."
    )


def end_lines(state, seconds: float) -> list[str]:
    """The key figures of a finished run."""
    train = [e for e in state.log_history if "loss" in e]
    lines = [
        f"done: {state.global_step:,} steps in {_duration(seconds)}"
        + (f", last training loss {number(train[-1]['loss'])}" if train else "")
    ]
    e = best_eval(state.log_history, state.best_metric)
    if e:
        which = "best" if state.best_metric is not None else "last"
        figures = [f"loss {number(e['eval_loss'])}"] + [
            f"{_NAMES.get(k, k)} {number(e[k])}" for k in ("eval_perplexity", "eval_end_token_accuracy") if k in e
        ]
        lines.append(f"validation ({which}, step {e.get('step', '?')}): " + "  ".join(figures))
    return lines


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


class TrainConsole(TrainerCallback):
    """Replaces transformers' tqdm bars and printed dicts (ProgressCallback / PrinterCallback)."""

    def __init__(self, cfg, stats: dict, console=None):
        from rich.console import Console

        self.cfg, self.stats = cfg, stats
        # soft_wrap: a pipe gets whole lines, never rich's 80-column wrapping.
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.progress = self.task = None
        self.started = time.monotonic()

    def say(self, text: str, style: str | None = None) -> None:
        target = self.progress.console if self.progress is not None else self.console
        target.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.started = time.monotonic()
        for line in data_lines(self.cfg, self.stats):
            self.say(line)
        self.say(plan_line(args, state))
        if self.console.is_terminal and not args.disable_tqdm:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        line = log_line(logs, state.global_step, state.max_steps)
        if line:
            self.say(line, style="bold" if line.startswith("eval") else None)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if state.is_world_process_zero:
            for line in end_lines(state, time.monotonic() - self.started):
                self.say(line, style="bold")


def attach(trainer, cfg, stats: dict) -> TrainConsole:
    """Swap the Trainer's printing callbacks for a TrainConsole, and say loudly what the data leaves out."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    console = TrainConsole(cfg, stats)
    trainer.add_callback(console)
    warning = data_warning(cfg, stats) if trainer.is_world_process_zero() else None
    if warning:
        logger.warning(warning)
    return console
