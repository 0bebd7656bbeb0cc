"""The model card (README.md in the StarChat cards' shape) and its loss-curve plot."""

from __future__ import annotations

import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)


def results_table(log_history: list[dict]) -> list[dict]:
    """One row per evaluation: the mean training loss logged since the previous one, epoch, step, validation loss.

    The mean, not the last logged value: with logging every step, one batch's loss is noise (0.2 to 1.2
    within an epoch of the nano-cpu run), while the epoch's mean is what compares with the validation loss.
    """
    rows, since = [], []
    for entry in log_history:
        if "loss" in entry:
            since.append(entry["loss"])
        if "eval_loss" in entry:
            rows.append({"train_loss": sum(since) / len(since) if since else None, "epoch": entry.get("epoch"),
                         "step": entry.get("step"), "eval_loss": entry["eval_loss"]})
            since = []
    return rows


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "No log"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def plot_losses(log_history: list[dict], path: Path) -> Path | None:
    """Training and validation loss against the step, as a PNG (matplotlib's Agg backend, no display)."""
    try:
        import matplotlib
    except ImportError:  # the `plot` extra: the card is written without the picture
        logger.warning("no loss_curve.png: matplotlib is not installed (pip install 'starchat[plot]')")
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="training loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _versions() -> list[str]:
    import importlib.metadata as md

    out = []
    for name, label in (("transformers", "Transformers"), ("torch", "Pytorch"), ("datasets", "Datasets"),
                        ("tokenizers", "Tokenizers"), ("accelerate", "Accelerate"), ("peft", "PEFT"),
                        ("trl", "TRL")):
        try:
            out.append(f"- {label} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return out


def render_card(cfg: dict, log_history: list[dict], end_token_id: int, dataset_stats: dict | None = None,
                plot_name: str | None = "loss_curve.png", world_size: int = 1) -> str:
    """The README.md text."""
    m, d, t, lora = cfg["model"], cfg["data"], cfg["training"], cfg["lora"]
    name = t.get("hub_model_id") or Path(t["output_dir"]).name
    base = m["name_or_path"] + (f" ({m['gguf_file']}, dequantized)" if m.get("gguf_file") else "")
    rows = results_table(log_history)
    best = min((r["eval_loss"] for r in rows), default=None)
    total = t["per_device_train_batch_size"] * world_size * t["gradient_accumulation_steps"]
    method = f"LoRA (r={lora['r']}, alpha={lora['alpha']})" if lora["enabled"] else "full fine-tuning"
    lines = [
        "---", "tags:", "- generated_from_trainer", "- starchat", f"base_model: {m['name_or_path']}",
        "library_name: " + ("peft" if lora["enabled"] else "transformers"), "---", "",
        f"# {name}", "",
        f"This model is a fine-tuned version of {base} on {d['dataset']}.",
    ]
    if best is not None:
        lines += ["It achieves the following results on the evaluation set:", f"- Loss: {best:.4f}",
                  f"- Perplexity: {math.exp(min(best, 50)):.4f}"]
        best_log = next((e for e in log_history if e.get("eval_loss") == best), {})
        if "eval_end_token_accuracy" in best_log:
            lines.append(f"- End-token accuracy: {best_log['eval_end_token_accuracy']:.4f} (share of replies "
                         "whose `<|end|>` is the top prediction: where it is low, generation does not stop)")
    lines += [
        "", "## Model description", "",
        f"A coding assistant in the StarChat dialogue format, trained with `starchat train` ({method}). "
        "Only the assistant replies (and their `<|end|>` token) were trained on.", "",
        "## Intended uses & limitations", "",
        "The model answers programming questions in a chat. It was not aligned with human preferences and can "
        "produce wrong, insecure or problematic code and text; check its output before use.", "",
        "Use the prompt template of the StarChat models and stop generating at `<|end|>` "
        f"(token ID {end_token_id}, the `eos_token_id` of `generation_config.json`):", "",
        "```python", "import torch", "from transformers import pipeline", "",
        f'pipe = pipeline("text-generation", model="{name}", dtype=torch.bfloat16, device_map="auto")',
        'prompt_template = "<|system|>\\n<|end|>\\n<|user|>\\n{query}<|end|>\\n<|assistant|>"',
        'prompt = prompt_template.format(query="How do I sort a list in Python?")',
        "# We use a special <|end|> token with ID " + str(end_token_id) + " to indicate the end of a turn",
        f"outputs = pipe(prompt, max_new_tokens=256, do_sample=True, temperature=0.2, top_k=50, top_p=0.95, "
        f"eos_token_id={end_token_id})", "```", "",
        "## Training and evaluation data", "",
        f"Dataset: {d['dataset']} (splits `{d['train_split']}` / `{d['test_split'] or '-'}`), max length "
        f"{d['max_length']}, " + (f"packed into blocks of {d['block_size']} tokens." if d["packing"] else "unpacked."),
    ]
    if dataset_stats:
        for k in ("train_tokenize", "eval_tokenize"):
            s = dataset_stats.get(k)
            if isinstance(s, dict):
                kept = {kk: v for kk, v in s.items() if isinstance(v, (int, float))}
                lines.append(f"- {k.split('_')[0]}: " + ", ".join(f"{kk}={v}" for kk, v in kept.items()))
    lines += [
        "", "## Training procedure", "", "### Training hyperparameters", "",
        "The following hyperparameters were used during training:",
        f"- learning_rate: {t['learning_rate']}",
        f"- train_batch_size: {t['per_device_train_batch_size']}",
        f"- eval_batch_size: {t['per_device_eval_batch_size']}",
        f"- seed: {t['seed']}",
        f"- distributed_type: {t.get('accelerate_config') or 'single process'}",
        f"- num_devices: {world_size}",
        f"- gradient_accumulation_steps: {t['gradient_accumulation_steps']}",
        f"- total_train_batch_size: {total}",
        f"- optimizer: {t['optim']} with betas=({t['adam_beta1']},{t['adam_beta2']}) and "
        f"epsilon={t['adam_epsilon']}",
        *([f"- new_token_lr_multiplier: {t['new_token_lr_multiplier']}"]
          if t.get("new_token_lr_multiplier", 1.0) != 1.0 else []),
        f"- lr_scheduler_type: {t['lr_scheduler_type']}",
        f"- lr_scheduler_warmup_ratio: {t['warmup_ratio']}",
        f"- num_epochs: {t['num_train_epochs']}" + (f" (max_steps {t['max_steps']})" if t["max_steps"] > 0 else ""),
        f"- mixed_precision_training: {'bf16' if t['bf16'] else 'fp16' if t['fp16'] else 'no'}",
        "", "### Training results", "",
        "| Training Loss | Epoch | Step | Validation Loss |",
        "|:-------------:|:-----:|:----:|:---------------:|",
    ]
    for r in rows:
        lines.append(f"| {_fmt(r['train_loss'])} | {_fmt(r['epoch'], 2)} | {r['step']} | {_fmt(r['eval_loss'])} |")
    lines += ["", "Training Loss is the mean of the losses logged since the previous evaluation; every loss is "
              "over the assistant tokens (the replies and their `<|end|>`) only."]
    if plot_name:
        lines += ["", f"![Training and validation loss]({plot_name})"]
    lines += ["", "", "### Framework versions", "", *_versions(), ""]
    return "\n".join(lines)


def write_card(out_dir: Path, cfg: dict, log_history: list[dict], end_token_id: int,
               dataset_stats: dict | None = None, world_size: int = 1) -> bool:
    """Write README.md and loss_curve.png into out_dir. Never raises: a card must not cost a finished run."""
    plot_name = None
    try:
        if plot_losses(log_history, out_dir / "loss_curve.png"):
            plot_name = "loss_curve.png"
    except Exception as e:  # noqa: BLE001 - the plot is decoration; the model matters
        logger.warning("could not draw the loss curve: %s", e)
    try:
        text = render_card(cfg, log_history, end_token_id, dataset_stats, plot_name, world_size)
    except Exception as e:  # noqa: BLE001
        logger.warning("could not render the full model card (%s); writing a minimal one", e)
        text = f"# {Path(cfg.get('training', {}).get('output_dir', 'model')).name}\n\nTrained with starchat.\n"
    try:
        (out_dir / "README.md").write_text(text, encoding="utf-8")
        return True
    except OSError as e:
        logger.warning("could not write the model card: %s", e)
        return False
