"""`train(config)`: the one training path for 1 CPU to N GPUs, on transformers' Trainer and accelerate."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path

from starchat.errors import StarchatError
from starchat.train import checkpoint as ckpt
from starchat.train.config import TrainConfig, dump_config, validate_config

logger = logging.getLogger(__name__)
CHECKPOINT_SUBDIR = "checkpoints"


def is_main_process() -> bool:
    """Global rank 0 of a launched run (or the only process): the one that writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


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
                    raise StarchatError("training.new_token_lr_multiplier works without DeepSpeed and FSDP "
                                        "only; set it to 1.0 for this run")
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
        logger.warning("the accelerate config asks for mixed precision %r; training.bf16/fp16 say %r, which is used",
                       launched, t.mixed_precision)
    os.environ["ACCELERATE_MIXED_PRECISION"] = t.mixed_precision
    from transformers import TrainingArguments

    # transformers 5.23 calls it activation_checkpointing; 5.20 (what vllm 0.33 allows) only gradient_checkpointing.
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return dict(
        output_dir=str(run_dir),
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay, adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_epsilon=t.adam_epsilon,
        optim=t.optim, max_grad_norm=t.max_grad_norm, seed=t.seed, data_seed=t.seed, bf16=t.bf16, fp16=t.fp16,
        eval_strategy=eval_strategy, eval_steps=t.eval_steps, eval_on_start=t.eval_on_start and has_eval,
        save_strategy=t.save_strategy, save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        load_best_model_at_end=t.load_best_model_at_end and has_eval,
        metric_for_best_model="eval_loss", greater_is_better=False,
        logging_steps=t.logging_steps, logging_first_step=True, report_to=t.report_to,
        dataloader_num_workers=t.dataloader_num_workers, use_cpu=t.use_cpu, disable_tqdm=t.disable_tqdm,
        **{checkpointing: cfg.model.gradient_checkpointing},
        # Our columns (input_ids, labels, position_ids) are exactly what the model takes.
        remove_unused_columns=False, include_num_input_tokens_seen="non_padding",
        save_only_model=False,
        ddp_find_unused_parameters=False,  # every trainable weight is used in each forward pass
    )


def build(cfg: TrainConfig, callbacks=None):
    """Everything up to (not including) training: checks, tokenizer, data, model, Trainer.

    Returns (trainer, tokenizer, data_stats, resume_checkpoint). Bad input fails here, before any step.
    """
    from starchat.train.data import collator, ensure_dataset, prepare_data
    from starchat.templates import end_token_id
    from starchat.train.fim import fim_callbacks, prepare_fim
    from starchat.train.model import apply_lora, load_model, load_tokenizer, new_token_ids, resolve_model_path

    validate_config(cfg)
    run_dir, resume = _claim(cfg)
    if cfg.method == "dpo":
        from starchat.train.dpo import build_dpo

        return build_dpo(cfg, run_dir, resume, callbacks)

    ensure_dataset(cfg.data)
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(cfg.model, model_path)
    fim_spec, fim_new_ids = prepare_fim(cfg, tokenizer)  # after the dialogue tokens, before the model's resize
    data = prepare_data(cfg.data, tokenizer, cfg.model.template, fim_spec=fim_spec)
    # The arguments first: under DeepSpeed ZeRO-3 they switch on sharded loading (and gathered resizing).
    args = training_arguments(cfg, run_dir, has_eval=data.eval is not None)
    model = load_model(cfg.model, model_path, tokenizer, use_cpu=cfg.training.use_cpu)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, tokenizer, cfg.model.template, quantized=cfg.model.load_in_4bit,
                           extra_ids=fim_new_ids)
    trainer_cls, marker = _trainer_class()
    metrics = {}
    if data.eval is not None:
        from starchat.train.new_tokens import end_token_logits_to_argmax, end_token_metrics

        metrics = dict(compute_metrics=end_token_metrics(end_token_id(tokenizer, cfg.model.template)),
                       preprocess_logits_for_metrics=end_token_logits_to_argmax)
    trainer = trainer_cls(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                          data_collator=collator(cfg.data, tokenizer), processing_class=tokenizer,
                          callbacks=[*fim_callbacks(fim_spec), marker(), *(callbacks or [])], **metrics)
    trainer.new_token_rows = (new_token_ids(tokenizer, cfg.model.template) + fim_new_ids,
                              cfg.training.new_token_lr_multiplier)
    trainer.fim_spec = fim_spec
    return trainer, tokenizer, data.stats, resume


def _claim(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """Claim output_dir for this run (see checkpoint.claim_output_dir); returns (checkpoint dir, checkpoint to
    resume from or None)."""
    out = Path(cfg.training.output_dir)
    same_run = ckpt.claim_output_dir(out, cfg.to_dict(), cfg.training.overwrite) if is_main_process() else True
    run_dir = out / CHECKPOINT_SUBDIR
    resume = None
    if is_main_process():  # training again: until it ends, this directory holds no finished run
        (out / ckpt.FINISHED_MARKER).unlink(missing_ok=True)
    if same_run and is_main_process():
        if cfg.training.resume:
            ckpt.remove_incomplete(run_dir)
        else:  # starting this run over: its old checkpoints must not mix with the new ones
            shutil.rmtree(run_dir, ignore_errors=True)
    if same_run and cfg.training.resume:
        resume = ckpt.last_complete_checkpoint(run_dir)
    return run_dir, resume


def finished(cfg: TrainConfig) -> bool:
    """True when output_dir already holds this run's final model, so rerunning the command has nothing to do
    (with training.resume false or --overwrite it trains again)."""
    t = cfg.training
    return t.resume and not t.overwrite and ckpt.is_finished(Path(t.output_dir), cfg.to_dict())


def train(cfg: TrainConfig, callbacks=None) -> Path:
    """Train as configured; resume from the last complete checkpoint of the same run; return the output dir.

    A run that already finished is left exactly as it is (no re-evaluation, no second results row).
    """
    validate_config(cfg)
    if finished(cfg):
        logger.warning("%s already holds the final model of this run; nothing to do", cfg.training.output_dir)
        return Path(cfg.training.output_dir)
    trainer, tokenizer, stats, resume = build(cfg, callbacks)
    if resume is not None:
        logger.warning("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    out = Path(cfg.training.output_dir)
    save_final(trainer, tokenizer, cfg, stats, out)
    return out


def save_final(trainer, tokenizer, cfg: TrainConfig, stats: dict, out: Path) -> None:
    """Write the usable model into out/ atomically: build it in a temp dir, then move each file in place."""
    from starchat.templates import end_token_id, get_template
    from starchat.train.card import write_card
    from starchat.train.fim import saved_spec
    from starchat.train.portable import make_portable

    tmp = out / ".final.tmp"
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # every rank: gathers ZeRO-3 / FSDP shards
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(tmp)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.config.use_cache = True  # training turned it off; generation wants it
    if cfg.lora.enabled:
        model.generation_config.save_pretrained(tmp)
    else:
        model.config.save_pretrained(tmp)
    get_template(cfg.model.template).save(tmp)
    spec = saved_spec(trainer, tokenizer, cfg)
    if spec is not None:  # chat, serve, eval infill and the GGUF export read the FIM format from it
        spec.save(tmp)
    make_portable(tmp)  # transformers 4.x (TGI, older vLLM) must read the same model
    (tmp / "training_config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    (tmp / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
    summary = {"log_history": trainer.state.log_history, "best_checkpoint": trainer.state.best_model_checkpoint,
               "best_eval_loss": trainer.state.best_metric, "global_step": trainer.state.global_step,
               "data_stats": _jsonable(stats)}
    (tmp / "trainer_results.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    write_card(tmp, cfg.to_dict(), trainer.state.log_history, end_token_id(tokenizer, cfg.model.template),
               _jsonable(stats), trainer.args.world_size)
    # The weights go last, so a directory with weights also has its tokenizer and config.
    files = sorted(tmp.iterdir(), key=lambda p: (p.suffix == ".safetensors" or p.name.endswith(".index.json"),
                                                 p.name))
    for f in files:
        dest = out / f.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(f, dest)
    tmp.rmdir()
    ckpt.mark_finished(out)  # last: only a run whose final files are all in place counts as finished


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str)) if obj else {}
