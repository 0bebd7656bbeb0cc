"""FIM in `starchat train`: the tokenizer's FIM spec, StarCoder's FIM tokens added when a recipe asks for FIM rows,
and fim.json written beside every model and checkpoint the run writes."""

from __future__ import annotations

from pathlib import Path

from starchat import fim
from starchat.train.config import TrainConfig


def prepare_fim(cfg: TrainConfig, tokenizer) -> tuple[fim.FimSpec | None, list[int]]:
    """(the spec the model is trained and saved with, ids of FIM tokens this call added).

    Call after the dialogue tokens are added (``load_tokenizer``) and before the model is loaded: the FIM tokens
    then come after the dialogue tokens, and ``load_model`` gives their new rows the mean embedding, as the
    dialogue tokens' rows get. The added ids join the dialogue tokens' set of new rows (larger steps with
    ``training.new_token_lr_multiplier``, trainable rows under LoRA). A base with FIM tokens of its own
    (StarCoder, Qwen2.5-Coder...) keeps them and its spec; its rows are trained as any other row.
    """
    own = fim.FimSpec.from_tokenizer(tokenizer)
    if own is not None or not cfg.data.fim.enabled:
        return own, []
    if not cfg.data.fim.add_tokens:
        raise fim.FimError(
            f"model.name_or_path: {cfg.model.name_or_path} has no fill-in-the-middle tokens and "
            "data.fim.add_tokens is false: set it to true to add StarCoder's, or train a "
            "FIM-pretrained base (StarCoder, Qwen2.5-Coder, ...)"
        )
    before = len(tokenizer)
    spec = fim.add_fim_tokens(tokenizer)
    return spec, list(range(before, len(tokenizer)))


def saved_spec(trainer, tokenizer, cfg: TrainConfig) -> fim.FimSpec | None:
    """The spec to save with the final model: the run's, else the base's fim.json, else the tokenizer's."""
    spec = getattr(trainer, "fim_spec", None)
    if spec is not None:
        return spec
    base = Path(cfg.model.name_or_path)
    return fim.load_spec(base, tokenizer) if base.is_dir() else fim.FimSpec.from_tokenizer(tokenizer)


def fim_callbacks(spec: fim.FimSpec | None) -> list:
    """A Trainer callback writing fim.json into each checkpoint; listed before the one that marks the checkpoint
    complete, so a complete checkpoint has it. None without a spec."""
    if spec is None:
        return []
    from transformers import TrainerCallback

    class SaveFimSpec(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                spec.save(path)

    return [SaveFimSpec()]
