"""What every training method builds its Trainer from: the TrainingArguments of the config, starchat's
Trainer subclass, and the check that the training length fits the model's context.

Every method's builder (starchat.train.methods: sft, dpo) imports this module, and none imports another's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

from starchat.errors import StarchatError
from starchat.train import checkpoint as ckpt
from starchat.train.config import TrainConfig

logger = logging.getLogger(__name__)


def _trainer_class():
    from transformers import Trainer, TrainerCallback

    class CompleteMarker(TrainerCallback):
        """Marks each checkpoint complete after the Trainer has written all of it."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if path.is_dir():
                    ckpt.mark_complete(path, state.global_step)

    class StarchatTrainer(Trainer):
        """Trainer that logs perplexity over the assistant tokens with every evaluation, and can take larger
        steps on the new tokens' rows (`new_token_rows`: (token ids, multiplier))."""

        new_token_rows: tuple[list[int], float] = ([], 1.0)

        def create_optimizer(self, *args, **kwargs):
            fresh = self.optimizer is None
            optimizer = super().create_optimizer(*args, **kwargs)
            if fresh and self.new_token_rows[1] != 1.0:
                from starchat.train.new_tokens import scale_new_token_steps

                if self.is_deepspeed_enabled or self.is_fsdp_enabled:  # also custom accelerate YAMLs
                    # DeepSpeed steps its own fp32 copies and FSDP flattens: the hooks would be lost.
                    raise StarchatError(
                        "training.new_token_lr_multiplier works without DeepSpeed and FSDP "
                        "only; set it to 1.0 for this run"
                    )
                scale_new_token_steps(optimizer, self.model, *self.new_token_rows)
            return optimizer

        def log(self, logs, *args, **kwargs):
            if "eval_loss" in logs:
                logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
            super().log(logs, *args, **kwargs)

    return StarchatTrainer, CompleteMarker


def training_arguments(cfg: TrainConfig, run_dir: Path, has_eval: bool):
    """transformers TrainingArguments from the typed config."""
    from transformers import TrainingArguments

    return TrainingArguments(**training_argument_kwargs(cfg, run_dir, has_eval))


def training_argument_kwargs(cfg: TrainConfig, run_dir: Path, has_eval: bool) -> dict:
    """The TrainingArguments keywords of the typed config (SFT's TrainingArguments and DPO's DPOConfig share them)."""
    t = cfg.training
    eval_strategy = t.eval_strategy if has_eval else "no"
    # TrainingArguments takes mixed precision from accelerate's environment unless bf16/fp16 is set, so
    # an accelerate config's bf16 would silently override the recipe's `bf16: false`. The recipe wins.
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched and launched != t.mixed_precision:
        logger.warning(
            "the accelerate config asks for mixed precision %r; training.bf16/fp16 say %r, which is used",
            launched,
            t.mixed_precision,
        )
    os.environ["ACCELERATE_MIXED_PRECISION"] = t.mixed_precision
    from transformers import TrainingArguments

    # transformers 5.23 calls it activation_checkpointing; 5.20 (what vllm 0.33 allows) only gradient_checkpointing.
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return dict(
        output_dir=str(run_dir),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        optim=t.optim,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.bf16,
        fp16=t.fp16,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        eval_on_start=t.eval_on_start and has_eval,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=t.load_best_model_at_end and has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to=t.report_to,
        dataloader_num_workers=t.dataloader_num_workers,
        use_cpu=t.use_cpu,
        disable_tqdm=t.disable_tqdm,
        **{checkpointing: cfg.model.gradient_checkpointing},
        # Our columns (input_ids, labels, position_ids) are exactly what the model takes.
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        save_only_model=False,
        ddp_find_unused_parameters=False,  # every trainable weight is used in each forward pass
    )


CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "seq_len",
)
"""Where model configs keep their context length (transformers maps most to max_position_embeddings)."""


def model_context(model_config) -> tuple[str, int] | None:
    """(config key, tokens): the longest sequence the model takes, read from its config; None if it gives none."""
    text = model_config.get_text_config()
    for key in CONTEXT_KEYS:
        value = getattr(text, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return getattr(text, "attribute_map", {}).get(key, key), value  # the name config.json uses
    return None


def check_context(cfg: TrainConfig, model_path: str, model_config=None) -> None:
    """The training length (the method's length_key: data.max_length; dpo.max_length for dpo) must fit the context.

    Why: a longer sequence fails mid-run (an IndexError in the position embeddings) or trains positions the
    model never learned. Only the config is read (``model_config``, or loaded here), never the weights; a model
    whose config cannot be read is left to the model loading, which reports it."""
    from transformers import AutoConfig

    from starchat.train.config import ConfigError
    from starchat.train.methods import get_method

    key = get_method(cfg.method).length_key  # e.g. dpo.max_length for method dpo
    section, _, name = key.partition(".")
    length = getattr(getattr(cfg, section), name)
    if model_config is None:
        try:
            model_config = AutoConfig.from_pretrained(
                model_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
            )
        except (OSError, ValueError):
            return
    found = model_context(model_config)
    if found is None:
        logger.warning(
            "model %s gives no context length in its config (none of %s); assuming %s=%d fits",
            cfg.model.name_or_path,
            ", ".join(CONTEXT_KEYS),
            key,
            length,
        )
        return
    name, limit = found
    if length > limit:
        raise ConfigError(
            f"{key}={length} is above the context of model {cfg.model.name_or_path!r}: {limit} tokens "
            f"({name} in its config); set {key} to {limit} or less"
        )
