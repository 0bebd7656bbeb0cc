"""`method: dpo`: preference tuning with TRL's DPOTrainer; its `dpo:` recipe section and checks.

The builder itself (pairs, tokenization, the trainer) is starchat.train.dpo, imported when a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from starchat.options import ConfigError, setting
from starchat.train.methods import Method

# TRL's DPOTrainer loss names (trl 1.16 `DPOConfig.loss_type`).
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


@dataclass
class DpoConfig:
    """Preference tuning with TRL's DPOTrainer (used when the recipe says `method: dpo`).

    The data is a preference dataset (columns prompt, chosen, rejected as message lists). The loss
    covers each reply and its end-of-turn token, never the prompt.
    """

    beta: float = setting(
        0.1,
        "How far the policy may move from the reference: higher keeps it closer (the implicit "
        "rewards are beta * log-ratio to the reference). starchat2 used 0.05.",
    )
    loss_type: str = setting(
        "sigmoid",
        "TRL's DPO loss: sigmoid (the DPO paper), ipo, hinge, robust, ... (see trl.DPOConfig.loss_type).",
        choices=DPO_LOSS_TYPES,
    )
    label_smoothing: float = setting(0.0, "Assumed share of flipped preference labels (robust/exo_pair losses).")
    reference: str = setting(
        "model",
        "The reference policy: 'model' (a frozen copy of the starting model, or with "
        "LoRA the base with the adapters off) or 'precomputed' (the starting model's "
        "log-probabilities of every pair computed once before training; no second model "
        "in memory).",
        choices=("model", "precomputed"),
    )
    precompute_batch_size: int | None = setting(
        None, "Batch size of the reference pass with reference: precomputed (default: the train/eval batch size)."
    )
    max_length: int = setting(1024, "Longest prompt + reply in tokens (for the longer of the two replies).")
    max_prompt_length: int | None = setting(
        None, "Prompts longer than this keep their last max_prompt_length tokens (default: half of dpo.max_length)."
    )
    truncation: str = setting(
        "drop",
        "Pairs longer than max_length after the prompt is cut: 'drop' (skip and count "
        "them) or 'cut' (keep the first max_length tokens: the reply loses its end token).",
        choices=("drop", "cut"),
    )


def validate_dpo(cfg, where: str) -> None:
    """The dpo section's own checks, and the SFT-only keys a DPO run must leave alone."""
    p = cfg.dpo
    if p.beta <= 0:
        raise ConfigError(f"{where}: dpo.beta must be > 0, got {p.beta}")
    if p.max_length < 8:
        raise ConfigError(f"{where}: dpo.max_length must be >= 8, got {p.max_length}")
    if p.max_prompt_length is not None and not 1 <= p.max_prompt_length < p.max_length:
        raise ConfigError(
            f"{where}: dpo.max_prompt_length must be in 1 .. dpo.max_length - 1 (got "
            f"{p.max_prompt_length}, max_length {p.max_length}): the reply needs room"
        )
    if p.precompute_batch_size is not None and p.precompute_batch_size < 1:
        raise ConfigError(f"{where}: dpo.precompute_batch_size must be >= 1, got {p.precompute_batch_size}")
    if not 0 <= p.label_smoothing < 0.5:
        raise ConfigError(f"{where}: dpo.label_smoothing must be in [0, 0.5), got {p.label_smoothing}")
    if p.loss_type == "exo_pair" and p.label_smoothing == 0:
        raise ConfigError(f"{where}: dpo.loss_type exo_pair needs dpo.label_smoothing > 0 (the EXO paper: 1e-3)")
    if cfg.data.from_code:
        raise ConfigError(
            f"{where}: data.from_code builds dialogues for SFT; a DPO run reads preference pairs "
            "(build them with `starchat data pairs`): remove data.from_code"
        )
    if cfg.training.new_token_lr_multiplier != 1.0:
        raise ConfigError(
            f"{where}: training.new_token_lr_multiplier is for SFT, where the dialogue tokens are "
            "new; DPO starts from a model that knows them: set it to 1.0"
        )


METHOD = Method(
    name="dpo",
    help="preference tuning on chosen/rejected pairs, with the dpo section",
    build="starchat.train.dpo:build_dpo",
    section="dpo",
    section_class=DpoConfig,
    validate=validate_dpo,
    length_key="dpo.max_length",
)
