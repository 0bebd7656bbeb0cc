"""`train(config)`: the one training path for 1 CPU to N GPUs, on transformers' Trainer and accelerate."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from starchat.train import checkpoint as ckpt
from starchat.train.config import TrainConfig, dump_config, validate_config
from starchat.train.trainer import (  # noqa: F401  (moved there so that dpo does not import run)
    CONTEXT_KEYS,
    _trainer_class,
    check_context,
    model_context,
    training_argument_kwargs,
    training_arguments,
)

logger = logging.getLogger(__name__)
CHECKPOINT_SUBDIR = "checkpoints"


def is_main_process() -> bool:
    """Global rank 0 of a launched run (or the only process): the one that writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


def build(cfg: TrainConfig, callbacks=None):
    """Everything up to (not including) training: checks, tokenizer, data, model, Trainer, by the recipe's method
    (starchat.train.methods).

    Returns (trainer, tokenizer, data_stats, resume_checkpoint). Bad input fails here, before any step.
    """
    from starchat.train.methods import get_method

    validate_config(cfg)
    run_dir, resume = _claim(cfg)
    return get_method(cfg.method).builder()(cfg, run_dir, resume, callbacks)


def _claim(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """Claim output_dir for this run (see checkpoint.claim_output_dir); returns (checkpoint dir, checkpoint to
    resume from or None)."""
    out = Path(cfg.training.output_dir)
    if is_main_process():
        same_run = ckpt.claim_output_dir(out, cfg.to_dict(), cfg.training.overwrite)
    else:
        ckpt.wait_for_claim(out, cfg.to_dict())
        same_run = True
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
    from starchat import quiet

    quiet.install()
    quiet.progress_bars_off_a_terminal()
    validate_config(cfg)
    if finished(cfg):
        logger.warning("%s already holds the final model of this run; nothing to do", cfg.training.output_dir)
        return Path(cfg.training.output_dir)
    trainer, tokenizer, stats, resume = build(cfg, callbacks)
    from starchat.train.console import attach, end_token_warning

    attach(trainer, cfg, stats)  # before the first step: data kept and dropped, steps, devices; then a bar
    if resume is not None:
        logger.warning("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    out = Path(cfg.training.output_dir)
    save_final(trainer, tokenizer, cfg, stats, out)
    warning = end_token_warning(trainer.state.log_history, trainer.state.best_metric)
    if warning and trainer.is_world_process_zero():
        logger.warning(warning)
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
    summary = {
        "log_history": trainer.state.log_history,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_eval_loss": trainer.state.best_metric,
        "global_step": trainer.state.global_step,
        "data_stats": _jsonable(stats),
    }
    (tmp / "trainer_results.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    write_card(
        tmp,
        cfg.to_dict(),
        trainer.state.log_history,
        end_token_id(tokenizer, cfg.model.template),
        _jsonable(stats),
        trainer.args.world_size,
    )
    # The weights go last, so a directory with weights also has its tokenizer and config.
    files = sorted(tmp.iterdir(), key=lambda p: (p.suffix == ".safetensors" or p.name.endswith(".index.json"), p.name))
    for f in files:
        dest = out / f.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(f, dest)
    tmp.rmdir()
    ckpt.mark_finished(out)  # last: only a run whose final files are all in place counts as finished


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str)) if obj else {}
