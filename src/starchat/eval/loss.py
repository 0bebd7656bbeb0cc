"""`starchat eval loss`: validation loss and perplexity over the assistant tokens of a `starchat data build` output."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.options import setting


@dataclasses.dataclass
class LossConfig:
    """Which model, which data, and how to batch."""

    model: str = setting(help="A transformers checkpoint (directory or hub id).")
    data: str = setting(help="A directory written by `starchat data build`.")
    split: str = setting("test", "Split of --data to evaluate on.")
    batch_size: int = setting(4, "Dialogues per forward pass.")
    max_length: int = setting(
        2048, "Longest tokenized dialogue; longer ones are truncated by whole turns, as in training."
    )
    template: str = setting(
        "starchat", "The chat format the model was trained with (a name or a dialogue_template.json)."
    )
    limit: int | None = setting(None, "Only the first N dialogues (default: all).")
    progress: bool = setting(True, "Show a progress bar.")


def _load_split(cfg: LossConfig):
    import datasets

    path = Path(cfg.data)
    if not path.exists():
        raise StarchatError(f"{path}: not found; give a directory written by `starchat data build`") from None
    try:
        dd = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise StarchatError(
            f"{path}: not a saved dataset ({e}); give a directory written by `starchat data build`"
        ) from None
    if isinstance(dd, datasets.DatasetDict):
        if cfg.split not in dd:
            raise StarchatError(f"{path} has no split {cfg.split!r} (it has {list(dd)}); choose one with --split")
        dd = dd[cfg.split]
    if cfg.limit:
        dd = dd.select(range(min(cfg.limit, len(dd))))
    return dd


def eval_loss(cfg: LossConfig) -> dict[str, Any]:
    """Mean cross-entropy per assistant token (each reply and its end token, as trained), and its exp."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.data.collate import DataCollatorForDialogues
    from starchat.data.tokenize import IGNORE_INDEX, tokenize_dataset
    from starchat.models import accuracy_counts, resize_embeddings
    from starchat.templates import end_token_id, get_template, prepare_tokenizer

    ds = _load_split(cfg)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    vocab = tokenizer.get_vocab()
    missing = [t for t in get_template(cfg.template).special_tokens if t not in vocab]
    if missing:  # a base before fine-tuning: prepared as `starchat train` prepares it, for a before/after
        prepare_tokenizer(tokenizer, cfg.template)
    rows, stats = tokenize_dataset(ds, tokenizer, max_length=cfg.max_length, template=cfg.template)
    if len(rows) == 0:
        raise StarchatError(f"{cfg.data} [{cfg.split}]: no dialogue has assistant tokens to score")
    lengths = rows["length"]
    rows = rows.select(sorted(range(len(rows)), key=lambda i: -lengths[i]))  # similar lengths together: less padding
    model = AutoModelForCausalLM.from_pretrained(cfg.model)
    if missing:  # the new rows start at the mean embedding, exactly as training starts them
        resize_embeddings(model, len(tokenizer))
    model.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = DataCollatorForDialogues(pad_token_id=pad)
    end_id = end_token_id(tokenizer, cfg.template)
    total, count, hits, end_hits, ends = 0.0, 0, 0, 0, 0
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), cfg.batch_size), desc="loss", disable=not cfg.progress):
            batch = collate([rows[i] for i in range(start, min(start + cfg.batch_size, len(rows)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # token t predicts token t+1; padded and non-assistant positions are IGNORE_INDEX
            labels = batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.size(-1)),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            ).item()
            count += int((labels != IGNORE_INDEX).sum())
            h, _, eh, e = accuracy_counts(logits[:, :-1].argmax(-1), labels, end_id, IGNORE_INDEX)
            hits, end_hits, ends = hits + h, end_hits + eh, ends + e
    loss = total / count
    metrics = {
        "loss": loss,
        "perplexity": math.exp(loss),
        "token_accuracy": hits / count,
        "end_token_accuracy": end_hits / max(ends, 1),
    }
    return {
        "kind": "loss",
        "metrics": metrics,
        "added_tokens": missing,
        "model": cfg.model,
        "data": cfg.data,
        "split": cfg.split,
        "dialogues": len(rows),
        "assistant_tokens": count,
        "loss": loss,
        "perplexity": math.exp(loss),
        # greedy decoding ends a reply only where <|end|> is the top prediction
        "token_accuracy": hits / count,
        "end_token_accuracy": end_hits / max(ends, 1),
        "truncated_dialogues": stats["truncated_dialogues"],
        "dropped": stats["dropped"],
    }
