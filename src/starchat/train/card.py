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
            rows.append(
                {
                    "train_loss": sum(since) / len(since) if since else None,
                    "epoch": entry.get("epoch"),
                    "step": entry.get("step"),
                    "eval_loss": entry["eval_loss"],
                }
            )
            since = []
    return rows


# The DPO table's extra columns (alignment-handbook's DPO cards): header, TRL's evaluation log key.
DPO_COLUMNS = (
    ("Rewards/chosen", "eval_rewards/chosen"),
    ("Rewards/rejected", "eval_rewards/rejected"),
    ("Rewards/accuracies", "eval_rewards/accuracies"),
    ("Rewards/margins", "eval_rewards/margins"),
)


def dpo_results_table(log_history: list[dict]) -> list[dict]:
    """results_table's rows plus, per evaluation, the rewards of chosen and rejected, accuracy and margin."""
    rows = results_table(log_history)
    for row, entry in zip(rows, (e for e in log_history if "eval_loss" in e)):
        row.update({key: entry.get(key) for _, key in DPO_COLUMNS})
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


def plot_rewards(log_history: list[dict], path: Path) -> Path | None:
    """DPO: the validation rewards of chosen and rejected replies and their margin, and the reward accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [e for e in log_history if "eval_rewards/margins" in e and "step" in e]
    if not evals:
        return None
    steps = [e["step"] for e in evals]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label, color in (
        ("eval_rewards/chosen", "chosen", "tab:green"),
        ("eval_rewards/rejected", "rejected", "tab:red"),
        ("eval_rewards/margins", "margin", "tab:blue"),
    ):
        ax.plot(steps, [e.get(key) for e in evals], "o-", label=f"reward: {label}", color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("reward (beta x log-ratio to the reference)")
    ax.grid(alpha=0.3)
    acc = ax.twinx()
    acc.plot(steps, [e.get("eval_rewards/accuracies") for e in evals], "s--", color="tab:gray", label="reward accuracy")
    acc.set_ylim(0, 1)
    acc.set_ylabel("reward accuracy")
    lines = ax.get_legend_handles_labels()
    more = acc.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _versions() -> list[str]:
    import importlib.metadata as md

    out = []
    for name, label in (
        ("transformers", "Transformers"),
        ("torch", "Pytorch"),
        ("datasets", "Datasets"),
        ("tokenizers", "Tokenizers"),
        ("accelerate", "Accelerate"),
        ("peft", "PEFT"),
        ("trl", "TRL"),
    ):
        try:
            out.append(f"- {label} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return out


def render_card(
    cfg: dict,
    log_history: list[dict],
    end_token_id: int,
    dataset_stats: dict | None = None,
    plot_name: str | None = "loss_curve.png",
    world_size: int = 1,
    rewards_plot: str | None = None,
) -> str:
    """The README.md text (with method dpo: the DPO results table and the rewards plot)."""
    m, d, t, lora = cfg["model"], cfg["data"], cfg["training"], cfg["lora"]
    dpo = cfg.get("dpo") if cfg.get("method") == "dpo" else None
    name = t.get("hub_model_id") or Path(t["output_dir"]).name
    base = m["name_or_path"] + (f" ({m['gguf_file']}, dequantized)" if m.get("gguf_file") else "")
    rows = dpo_results_table(log_history) if dpo else results_table(log_history)
    best = min((r["eval_loss"] for r in rows), default=None)
    method = f"LoRA (r={lora['r']}, alpha={lora['alpha']})" if lora["enabled"] else "full fine-tuning"
    lines = [
        "---",
        "tags:",
        "- generated_from_trainer",
        "- starchat",
        *(["- dpo"] if dpo else []),
        f"base_model: {m['name_or_path']}",
        "library_name: " + ("peft" if lora["enabled"] else "transformers"),
        "---",
        "",
        f"# {name}",
        "",
        (
            f"This model is {base} tuned with DPO (beta {dpo['beta']}, {dpo['loss_type']} loss) on the preference "
            f"pairs {d['dataset']}."
            if dpo
            else f"This model is a fine-tuned version of {base} on {d['dataset']}."
        ),
    ]
    if best is not None:
        lines += ["It achieves the following results on the evaluation set:", f"- Loss: {best:.4f}"]
        best_log = next((e for e in log_history if e.get("eval_loss") == best), {})
        if dpo:
            lines += [f"- {label}: {best_log[key]:.4f}" for label, key in DPO_COLUMNS if key in best_log]
        else:
            lines.append(f"- Perplexity: {math.exp(min(best, 50)):.4f}")
        if "eval_end_token_accuracy" in best_log:
            lines.append(
                f"- End-token accuracy: {best_log['eval_end_token_accuracy']:.4f} (share of replies "
                "whose `<|end|>` is the top prediction: where it is low, generation does not stop)"
            )
    lines += [
        "",
        "## Model description",
        "",
        f"A coding assistant in the StarChat dialogue format, trained with `starchat train` ({method}"
        + (
            ", DPO). The DPO loss covers each chosen and rejected reply and its `<|end|>` token, never the prompt."
            if dpo
            else "). Only the assistant replies (and their `<|end|>` token) were trained on."
        ),
        "",
        "## Intended uses & limitations",
        "",
        (
            "The model answers programming questions in a chat. DPO on a set of preference pairs moves it towards "
            "the chosen replies; it can still produce wrong, insecure or problematic code and text; check its output "
            "before use."
            if dpo
            else "The model answers programming questions in a chat. It was not aligned with human preferences and can "
            "produce wrong, insecure or problematic code and text; check its output before use."
        ),
        "",
        *_usage(t, end_token_id),
        "",
        "## Training and evaluation data",
        "",
        *_data_lines(d, dpo, dataset_stats),
        "",
        "## Training procedure",
        "",
        "### Training hyperparameters",
        "",
        *_hyperparameters(t, dpo, world_size),
        "",
        "### Training results",
        "",
        *_table(rows, dpo),
    ]
    if plot_name:
        lines += ["", f"![Training and validation loss]({plot_name})"]
    if rewards_plot:
        lines += ["", f"![Validation rewards and reward accuracy]({rewards_plot})"]
    lines += ["", "", "### Framework versions", "", *_versions(), ""]
    return "\n".join(lines)


def _usage(t: dict, end_token_id: int) -> list[str]:
    """The pipeline snippet; the model is the output directory's absolute path, which works from any directory."""
    where = str(Path(t["output_dir"]).resolve())
    return [
        "Use the prompt template of the StarChat models and stop generating at `<|end|>` "
        f"(token ID {end_token_id}, the `eos_token_id` of `generation_config.json`):",
        "",
        "```python",
        "import torch",
        "from transformers import pipeline",
        "",
        f'pipe = pipeline("text-generation", model={where!r}, dtype=torch.bfloat16, device_map="auto")',
        'prompt_template = "<|system|>\\n<|end|>\\n<|user|>\\n{query}<|end|>\\n<|assistant|>"',
        'prompt = prompt_template.format(query="How do I sort a list in Python?")',
        "# We use a special <|end|> token with ID " + str(end_token_id) + " to indicate the end of a turn",
        f"outputs = pipe(prompt, max_new_tokens=256, do_sample=True, temperature=0.2, top_k=50, top_p=0.95, "
        f"eos_token_id={end_token_id})",
        "```",
    ]


def _data_lines(d: dict, dpo: dict | None, dataset_stats: dict | None) -> list[str]:
    splits = f"(splits `{d['train_split']}` / `{d['test_split'] or '-'}`)"
    if dpo:
        prompt = dpo.get("max_prompt_length") or dpo["max_length"] // 2
        lines = [
            f"Preference pairs: {d['dataset']} {splits}, at most {dpo['max_length']} tokens of prompt and "
            f"reply (prompts cut to their last {prompt} tokens), longer pairs "
            f"{'dropped' if dpo.get('truncation') == 'drop' else 'cut'}."
        ]
    else:
        lines = [
            f"Dataset: {d['dataset']} {splits}, max length {d['max_length']}, "
            + (f"packed into blocks of {d['block_size']} tokens." if d["packing"] else "unpacked.")
        ]
    for k in ("train_tokenize", "eval_tokenize"):
        s = (dataset_stats or {}).get(k)
        if isinstance(s, dict):
            kept = {kk: v for kk, v in s.items() if isinstance(v, (int, float))}
            lines.append(f"- {k.split('_')[0]}: " + ", ".join(f"{kk}={v}" for kk, v in kept.items()))
    return lines + _fim_lines(dataset_stats)


def _fim_lines(dataset_stats: dict | None) -> list[str]:
    """The training rows of each kind, and where the FIM rows came from (data.fim)."""
    rows = (dataset_stats or {}).get("train_rows")
    f = (dataset_stats or {}).get("fim")
    if not isinstance(rows, dict) or not isinstance(f, dict):
        return []
    return [
        "- training rows: " + ", ".join(f"{k}={v}" for k, v in rows.items()),
        f"- fill-in-the-middle: {f.get('psm', 0) + f.get('spm', 0)} FIM rows ({f.get('psm')} PSM, {f.get('spm')} "
        f"SPM) and {f.get('code')} plain code rows from {f.get('source')} ({f.get('unit')}s; "
        f"{f.get('dropped_too_long')} too long and {f.get('dropped_humaneval_overlap')} overlapping HumanEval "
        "dropped). A FIM row's loss covers the middle and its end token only (an editor sends the prefix and "
        "suffix and asks for the middle); a plain code row's covers every token. The model's FIM tokens are in "
        "`fim.json`.",
    ]


def _hyperparameters(t: dict, dpo: dict | None, world_size: int) -> list[str]:
    total = t["per_device_train_batch_size"] * world_size * t["gradient_accumulation_steps"]
    return [
        "The following hyperparameters were used during training:",
        f"- learning_rate: {t['learning_rate']}",
        *(
            [f"- beta: {dpo['beta']}", f"- loss_type: {dpo['loss_type']}", f"- reference: {dpo['reference']}"]
            if dpo
            else []
        ),
        f"- train_batch_size: {t['per_device_train_batch_size']}",
        f"- eval_batch_size: {t['per_device_eval_batch_size']}",
        f"- seed: {t['seed']}",
        f"- distributed_type: {t.get('accelerate_config') or 'single process'}",
        f"- num_devices: {world_size}",
        f"- gradient_accumulation_steps: {t['gradient_accumulation_steps']}",
        f"- total_train_batch_size: {total}",
        f"- optimizer: {t['optim']} with betas=({t['adam_beta1']},{t['adam_beta2']}) and epsilon={t['adam_epsilon']}",
        *(
            [f"- new_token_lr_multiplier: {t['new_token_lr_multiplier']}"]
            if t.get("new_token_lr_multiplier", 1.0) != 1.0
            else []
        ),
        f"- lr_scheduler_type: {t['lr_scheduler_type']}",
        f"- lr_scheduler_warmup_ratio: {t['warmup_ratio']}",
        f"- num_epochs: {t['num_train_epochs']}" + (f" (max_steps {t['max_steps']})" if t["max_steps"] > 0 else ""),
        f"- mixed_precision_training: {'bf16' if t['bf16'] else 'fp16' if t['fp16'] else 'no'}",
    ]


def _table(rows: list[dict], dpo: dict | None) -> list[str]:
    """The "Training results" table: the SFT cards' columns, plus the rewards for DPO."""
    extra = [label for label, _ in DPO_COLUMNS] if dpo else []
    head = ["Training Loss", "Epoch", "Step", "Validation Loss", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(f":{'-' * (len(h) - 2)}:" for h in head) + "|"]
    for r in rows:
        cells = [
            _fmt(r["train_loss"]),
            _fmt(r["epoch"], 2),
            str(r["step"]),
            _fmt(r["eval_loss"]),
            *(_fmt(r.get(key)) for _, key in (DPO_COLUMNS if dpo else ())),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if dpo:
        lines += [
            "",
            "Training Loss is the mean DPO loss logged since the previous evaluation. Rewards are beta "
            "times the log-probability ratio of policy to reference over a reply's tokens (and its "
            "`<|end|>`); accuracy is the share of pairs whose chosen reply has the higher reward, margin "
            "the mean chosen-minus-rejected reward.",
        ]
    else:
        lines += [
            "",
            "Training Loss is the mean of the losses logged since the previous evaluation; every loss is "
            "over the assistant tokens (the replies and their `<|end|>`) only.",
        ]
    return lines


def write_card(
    out_dir: Path,
    cfg: dict,
    log_history: list[dict],
    end_token_id: int,
    dataset_stats: dict | None = None,
    world_size: int = 1,
) -> bool:
    """Write README.md and loss_curve.png into out_dir. Never raises: a card must not cost a finished run."""
    plot_name = rewards_plot = None
    try:
        if plot_losses(log_history, out_dir / "loss_curve.png"):
            plot_name = "loss_curve.png"
        if cfg.get("method") == "dpo" and plot_rewards(log_history, out_dir / "rewards_curve.png"):
            rewards_plot = "rewards_curve.png"
    except Exception as e:  # noqa: BLE001 - the plot is decoration; the model matters
        logger.warning("could not draw the loss curve: %s", e)
    try:
        text = render_card(cfg, log_history, end_token_id, dataset_stats, plot_name, world_size, rewards_plot)
    except Exception as e:  # noqa: BLE001
        logger.warning("could not render the full model card (%s); writing a minimal one", e)
        text = f"# {Path(cfg.get('training', {}).get('output_dir', 'model')).name}\n\nTrained with starchat.\n"
    try:
        (out_dir / "README.md").write_text(text, encoding="utf-8")
        return True
    except OSError as e:
        logger.warning("could not write the model card: %s", e)
        return False
