"""Checking a training configuration: values that would only fail later (or silently do the wrong thing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starchat.options import field_choices
from starchat.train.config.schema import SECTIONS, TOP_LEVEL, ConfigError, TrainConfig
from starchat.train.methods import get_method


def _choices(cfg: TrainConfig) -> list[tuple[str, tuple]]:
    """(key, allowed values) of every field that declares `choices`, the top-level `method` first."""
    top = field_choices(type(cfg))
    return [
        *((k, top[k]) for k in TOP_LEVEL if k in top),
        *((f"{s}.{name}", ch) for s, c in SECTIONS.items() for name, ch in field_choices(c).items()),
    ]


def validate_config(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    """Reject values that would only fail later (or silently do the wrong thing)."""
    for key, choices in _choices(cfg):
        section, _, name = key.partition(".")
        value = getattr(getattr(cfg, section), name) if name else getattr(cfg, section)
        if value not in choices:
            raise ConfigError(f"{where}: {key} must be one of {choices}, got {value!r}")
    t, d = cfg.training, cfg.data
    if not cfg.model.name_or_path:
        raise ConfigError(f"{where}: model.name_or_path is required (a hub ID or a local checkpoint)")
    if not d.dataset:
        raise ConfigError(f"{where}: data.dataset is required (e.g. a directory from `starchat data build`)")
    if not t.output_dir:
        raise ConfigError(f"{where}: training.output_dir is required")
    if t.learning_rate <= 0:
        raise ConfigError(f"{where}: training.learning_rate must be > 0, got {t.learning_rate}")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(t, key) < 1:
            raise ConfigError(f"{where}: training.{key} must be >= 1, got {getattr(t, key)}")
    if t.new_token_lr_multiplier <= 0:
        raise ConfigError(f"{where}: training.new_token_lr_multiplier must be > 0, got {t.new_token_lr_multiplier}")
    if t.new_token_lr_multiplier != 1.0 and Path(t.accelerate_config or "").stem in ("zero3", "fsdp"):
        raise ConfigError(
            f"{where}: training.new_token_lr_multiplier needs whole embedding matrices; "
            f"{t.accelerate_config} shards them, so set it to 1.0"
        )
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"{where}: training.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if t.num_train_epochs <= 0 and t.max_steps <= 0:
        raise ConfigError(f"{where}: set training.num_train_epochs > 0 or training.max_steps > 0")
    if t.bf16 and t.fp16:
        raise ConfigError(f"{where}: training.bf16 and training.fp16 are exclusive; pick one")
    if d.max_length < 8 or d.block_size < 8:
        raise ConfigError(f"{where}: data.max_length and data.block_size must be >= 8")
    if t.load_best_model_at_end and d.test_split:
        if t.eval_strategy != t.save_strategy:
            raise ConfigError(
                f"{where}: keeping the best checkpoint needs training.eval_strategy == "
                f"training.save_strategy (got {t.eval_strategy!r} and {t.save_strategy!r})"
            )
        if t.eval_strategy == "steps" and t.eval_steps not in (None, t.save_steps) and t.save_steps % t.eval_steps:
            raise ConfigError(f"{where}: training.save_steps must be a multiple of training.eval_steps")
    if cfg.model.load_in_4bit and not cfg.lora.enabled:
        raise ConfigError(f"{where}: model.load_in_4bit (QLoRA) needs lora.enabled: true")
    if t.num_machines < 1 or not 0 <= t.machine_rank < t.num_machines:
        raise ConfigError(
            f"{where}: training.machine_rank must be in 0 .. num_machines - 1 (got machine_rank "
            f"{t.machine_rank}, num_machines {t.num_machines})"
        )
    if t.num_machines > 1 and not (t.accelerate_config and t.main_process_ip):
        raise ConfigError(
            f"{where}: a multi-node run (training.num_machines {t.num_machines}) needs "
            "training.accelerate_config and training.main_process_ip (the address of machine_rank 0)"
        )
    if t.num_processes is not None and (t.num_processes < 1 or t.num_processes % t.num_machines):
        raise ConfigError(
            f"{where}: training.num_processes counts the processes of all machines: a positive "
            f"multiple of training.num_machines ({t.num_machines}), got {t.num_processes}"
        )
    if t.report_to != "none" and importlib.util.find_spec(t.report_to) is None:
        raise ConfigError(
            f"{where}: training.report_to {t.report_to!r} needs the {t.report_to} package; "
            f"pip install 'starchat[{t.report_to}]', or set training.report_to none"
        )
    _validate_fim(cfg, where)
    method = get_method(cfg.method)
    if method.validate is not None:
        method.validate(cfg, where)
    if t.accelerate_config:
        from starchat.train.launch import resolve_accelerate_config

        resolve_accelerate_config(t.accelerate_config)
    return cfg


def _validate_fim(cfg: TrainConfig, where: str) -> None:
    f = cfg.data.fim
    if not f.enabled:
        return
    if cfg.method != "sft":
        raise ConfigError(
            f"{where}: data.fim mixes FIM rows into SFT; a {cfg.method.upper()} run trains its own rows "
            "only (its base's FIM tokens and fim.json carry over): remove the data.fim section"
        )
    for name in ("rate", "spm_rate"):
        if not 0 <= getattr(f, name) <= 1:
            raise ConfigError(f"{where}: data.fim.{name} must be in [0, 1], got {getattr(f, name)}")
    if not 0 < f.share < 1:
        raise ConfigError(
            f"{where}: data.fim.share must be in (0, 1) (the share of training rows from "
            f"data.fim.source), got {f.share}"
        )
    for name, allowed in field_choices(type(f)).items():  # a nested section: not among _choices' fields
        if getattr(f, name) not in allowed:
            raise ConfigError(f"{where}: data.fim.{name} must be one of {allowed}, got {getattr(f, name)!r}")
    if f.max_rows is not None and f.max_rows < 1:
        raise ConfigError(f"{where}: data.fim.max_rows must be >= 1 (or null), got {f.max_rows}")
    if f.max_chars < 16:
        raise ConfigError(f"{where}: data.fim.max_chars must be >= 16, got {f.max_chars}")
