"""`method: dpo`: preference pairs checked and tokenized with the SFT masks, then TRL's DPOTrainer.

The pairs are TRL's conversational preference rows (see `starchat.data.preference`): `prompt` (messages ending in a
user turn), `chosen` and `rejected` (one assistant message each); other columns are ignored.
Tokenization is starchat's own (`starchat.data.tokenize`: one encode of the rendered dialogue, the
mask from the tokens' character offsets), so a pair's completion is exactly what SFT trains on: the
reply and its `<|end|>`, never the prompt, and not the newline the template writes after `<|end|>`
(TRL's chat-template path would put that newline at the end of every completion). Everything else
(reference model or precomputed reference log-probs, the losses, the reward metrics, the collator,
LoRA through peft) is TRL's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

from starchat.data.preference import check_pair
from starchat.errors import StarchatError
from starchat.fsio import file_lock
from starchat.templates import TemplateError, common_prefix, validate_messages
from starchat.train.config import TrainConfig
from starchat.train.data import DataError, PreparedData, load_raw

COLUMNS = ("prompt", "chosen", "rejected")


def check_pairs(d, where: str) -> None:
    """Every row has the preference schema and is a valid pair (`check_pair`, the rule `data build` applies);
    the first bad row is an error naming it and the field."""
    missing = [c for c in COLUMNS if c not in d.column_names]
    if missing:
        raise DataError(
            f"{where}: no column {missing[0]!r} (columns: {d.column_names}); a DPO dataset has "
            "prompt, chosen and rejected message lists: build one with `starchat data build --kind "
            "preference` or `starchat data pairs`"
        )
    for i, row in enumerate(d.select_columns(list(COLUMNS))):
        at = f"{where}[{i}]"
        for col in COLUMNS:
            if not isinstance(row[col], list):
                raise DataError(
                    f"{at}.{col}: must be a list of {{role, content}} messages, got "
                    f"{str(row[col])[:80]!r}; convert it with `starchat data build --kind preference`"
                )
            try:
                validate_messages(row[col], f"{at}.{col}")
            except TemplateError as e:
                raise DataError(str(e)) from None
        check_pair(row["prompt"], row["chosen"], row["rejected"], at)


def _last_reply(labels: list[int]) -> tuple[int, int]:
    """(start, end) of the last run of trained tokens: the final reply and its end token."""
    end = max(i for i, v in enumerate(labels) if v != -100) + 1
    start = end
    while start > 0 and labels[start - 1] != -100:
        start -= 1
    return start, end


def tokenize_pairs(
    d,
    tokenizer,
    template: str,
    max_length: int,
    max_prompt_length: int,
    truncation: str = "drop",
    batch_size: int = 500,
):
    """Pairs -> (Dataset[prompt_ids, chosen_ids, rejected_ids], stats), with the SFT loss mask.

    The prompt is everything before the final reply's first trained token (so it ends with
    `<|assistant|>` and the newline after it); each completion is the reply and its end token.
    A reply whose first token merges with that newline (a reply starting with whitespace) starts
    the completion one token early, at the common prefix of the two sequences.
    """
    import datasets
    import pyarrow as pa

    from starchat.data.tokenize import tokenize_batch

    stats = {
        "pairs": len(d),
        "kept": 0,
        "tokens": 0,
        "chosen_tokens": 0,
        "rejected_tokens": 0,
        "truncated_prompts": 0,
        "cut_pairs": 0,
        "dropped_too_long": 0,
    }
    cols: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for lo in range(0, len(d), batch_size):
        rows = d[lo : lo + batch_size]
        dialogues = [p + c for p, c in zip(rows["prompt"], rows["chosen"])]
        dialogues += [p + r for p, r in zip(rows["prompt"], rows["rejected"])]
        toks = tokenize_batch(dialogues, tokenizer, template)
        n = len(rows["prompt"])
        for tc, tr in zip(toks[:n], toks[n:]):
            (cs, ce), (rs, re_) = _last_reply(tc["labels"]), _last_reply(tr["labels"])
            p = min(cs, rs, common_prefix(tc["input_ids"][:cs], tr["input_ids"][:rs]))
            prompt, chosen, rejected = tc["input_ids"][:p], tc["input_ids"][p:ce], tr["input_ids"][p:re_]
            if len(prompt) > max_prompt_length:
                prompt = prompt[-max_prompt_length:]  # the end of the prompt is what the reply answers
                stats["truncated_prompts"] += 1
            room = max_length - len(prompt)
            if max(len(chosen), len(rejected)) > room:
                if truncation == "drop":
                    stats["dropped_too_long"] += 1
                    continue
                chosen, rejected = chosen[:room], rejected[:room]
                stats["cut_pairs"] += 1
            cols["prompt_ids"].append(prompt)
            cols["chosen_ids"].append(chosen)
            cols["rejected_ids"].append(rejected)
            stats["kept"] += 1
            stats["chosen_tokens"] += len(chosen)
            stats["rejected_tokens"] += len(rejected)
            stats["tokens"] += 2 * len(prompt) + len(chosen) + len(rejected)
    lists = pa.list_(pa.int32())
    table = pa.table({k: pa.array(v, lists) for k, v in cols.items()})
    return datasets.Dataset(table), stats


def _on_disk(ds, run_dir: Path, name: str):
    """The tokenized split saved under the run's checkpoint dir (by content), and loaded back from there.

    Why: TRL caches precomputed reference log-probs beside the dataset's files and every rank reads
    rank 0's cache file; an in-memory dataset would put it in a per-process temporary directory.
    """
    import datasets

    digest = hashlib.sha256()
    for col in ds.data.table.columns:
        for buf in col.combine_chunks().buffers():
            if buf is not None:
                digest.update(buf)
    path = run_dir / f"pairs-{name}-{digest.hexdigest()[:12]}"
    with file_lock(path.with_name(f".{path.name}.lock")):
        if not (path / "state.json").exists():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            ds.save_to_disk(str(tmp))
            tmp.rename(path)
    return datasets.load_from_disk(str(path))


def prepare_pairs(cfg: TrainConfig, tokenizer, run_dir: Path) -> PreparedData:
    """Load, check and tokenize the train and test pairs."""
    dc, p = cfg.data, cfg.dpo
    raw = load_raw(dc)
    splits = {"train": (dc.train_split, "train_split", dc.max_train_samples)}
    if dc.test_split:
        splits["eval"] = (dc.test_split, "test_split", dc.max_eval_samples)
    out: dict = {"train": None, "eval": None}
    stats: dict = {}
    for name, (split, key, limit) in splits.items():
        if split not in raw:
            raise DataError(f"data.{key}: {dc.dataset} has no split {split!r} (it has {sorted(raw)})")
        d = raw[split]
        if len(d) == 0:
            raise DataError(f"data.dataset: split {split!r} of {dc.dataset} is empty")
        if limit:
            d = d.select(range(min(limit, len(d))))
        check_pairs(d, f"{dc.dataset}[{split}]")
        tok, s = tokenize_pairs(
            d, tokenizer, cfg.model.template, p.max_length, p.max_prompt_length or p.max_length // 2, p.truncation
        )
        stats[f"{name}_tokenize"] = s
        if len(tok) == 0:
            raise DataError(
                f"data: every {name} pair is longer than dpo.max_length={p.max_length} tokens; raise "
                "dpo.max_length or lower dpo.max_prompt_length"
            )
        out[name] = _on_disk(tok, run_dir, name)
    return PreparedData(out["train"], out["eval"], stats)


def dpo_arguments(cfg: TrainConfig, run_dir: Path, has_eval: bool):
    """trl.DPOConfig: the training section's arguments (as SFT's) plus the dpo section."""
    from trl import DPOConfig

    from starchat.train.trainer import training_argument_kwargs

    p = cfg.dpo
    kwargs = training_argument_kwargs(cfg, run_dir, has_eval)
    kwargs.update(
        beta=p.beta,
        loss_type=[p.loss_type],
        label_smoothing=p.label_smoothing,
        precompute_ref_log_probs=p.reference == "precomputed",
        precompute_ref_batch_size=p.precompute_batch_size,
        max_length=None,  # lengths were settled when tokenizing (dpo.max_length / max_prompt_length)
        # DPOConfig defaults activation checkpointing on; the recipe decides, as for SFT.
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        remove_unused_columns=True,  # TRL keeps its own columns (ids and reference log-probs)
        prediction_loss_only=True,  # evaluation needs the loss and TRL's reward metrics, not logits
    )
    return DPOConfig(**kwargs)


def _trainer_class():
    from trl import DPOTrainer

    class StarchatDPOTrainer(DPOTrainer):
        """DPOTrainer on pairs that starchat already tokenized (TRL would re-render them with the chat
        template); the model card is starchat's."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def create_model_card(self, *args, **kwargs):
            pass  # save_final writes the card (README.md) beside the final model

    return StarchatDPOTrainer


def _model_config(model_path: str, cfg: TrainConfig):
    """The starting model's config (no weights)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            model_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise StarchatError(f"model.name_or_path: cannot load {model_path!r}: {str(e).splitlines()[0][:300]}") from None


def _check_vocabulary(mc, cfg: TrainConfig, tokenizer) -> None:
    """The starting model's embeddings must already hold the dialogue tokens (they are not trained here)."""
    vocab = getattr(mc.get_text_config(), "vocab_size", None)
    if vocab is not None and vocab < len(tokenizer):
        raise StarchatError(
            f"model.name_or_path: {cfg.model.name_or_path!r} has {vocab} embedding rows for a "
            f"tokenizer of {len(tokenizer)}: its dialogue tokens were never trained; DPO starts "
            "from the output of `starchat train` (method: sft)"
        )


def disable_attention_dropout(model) -> int:
    """Zero the float dropout rates that attention code reads (GPT-BigCode's `attn_dropout`, Llama's
    `attention_dropout`); returns how many were set.

    Why: TRL disables dropout by zeroing `nn.Dropout` modules only, so a StarCoder policy kept dropping
    attention weights in training while its reference did not (a DPO loss of 0.69332 instead of ln 2 at
    step 0 on the tiny test model). Not covered: rates read straight from the config at call time.
    """
    n = 0
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float) and value > 0:
                setattr(module, name, 0.0)
                n += 1
    return n


def build_dpo(cfg: TrainConfig, run_dir: Path, resume, callbacks=None):
    """The DPO counterpart of run.build: (trainer, tokenizer, data_stats, resume_checkpoint)."""
    from starchat.train.model import load_model, load_tokenizer, peft_lora_config, prepare_for_lora, resolve_model_path
    from starchat.train.trainer import _trainer_class as sft_trainer_class
    from starchat.train.trainer import check_context

    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(cfg.model, model_path, require_dialogue_tokens=True)
    mc = _model_config(model_path, cfg)
    check_context(cfg, model_path, mc)
    _check_vocabulary(mc, cfg, tokenizer)
    data = prepare_pairs(cfg, tokenizer, run_dir)
    args = dpo_arguments(cfg, run_dir, has_eval=data.eval is not None)
    model = load_model(cfg.model, model_path, tokenizer, use_cpu=cfg.training.use_cpu)
    ref_model, peft_config = None, None
    if cfg.lora.enabled:
        # The reference is the base with the adapters off. The dialogue tokens' rows are not adapted:
        # they were trained by SFT, and TRL's log-probs read lm_head.weight directly.
        model = prepare_for_lora(model, cfg.model.load_in_4bit)
        lcfg = dataclasses.replace(cfg.lora, train_new_tokens=False)
        peft_config = peft_lora_config(model, lcfg, tokenizer, cfg.model.template)
    elif cfg.dpo.reference == "model":
        # Loaded as the policy is (revision, dtype, attention kernel), which TRL's own copy would not do.
        ref_model = load_model(cfg.model, model_path, tokenizer, use_cpu=cfg.training.use_cpu)
    for m in (model, ref_model):
        if m is not None:
            disable_attention_dropout(m)  # as TRL's disable_dropout (on by default) does for nn.Dropout
    _, marker = sft_trainer_class()
    trainer = _trainer_class()(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[marker(), *(callbacks or [])],
    )
    return trainer, tokenizer, data.stats, resume
