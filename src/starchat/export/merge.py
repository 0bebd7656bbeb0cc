"""`starchat export merge`: fold a LoRA/QLoRA adapter into its (resized) base and save a standalone model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from starchat.errors import StarchatError
from starchat.fsio import replace_dir
from starchat.train.portable import make_portable

# Files of the training output that also describe the merged model.
_CARRY = (
    "dialogue_template.json",
    "fim.json",
    "training_config.yaml",
    "README.md",
    "loss_curve.png",
    "rewards_curve.png",
    "trainer_results.json",
)


def _base_from_adapter(adapter_dir: Path) -> tuple[str, object | None]:
    """The base model path (a GGUF base resolves to its cached checkpoint) and the run's ModelConfig."""
    from starchat.train.config import load_config
    from starchat.train.model import resolve_model_path

    cfg_file = adapter_dir / "training_config.yaml"
    if cfg_file.is_file():
        import yaml

        raw = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        over = {f"model.{k}": v for k, v in (raw.get("model") or {}).items() if v is not None}
        cfg = load_config(None, over, validate=False)
        return resolve_model_path(cfg.model), cfg.model
    meta = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = meta.get("base_model_name_or_path")
    if not base:
        raise StarchatError(f"{adapter_dir}/adapter_config.json names no base model; pass --base")
    return base, None


def merge_lora(adapter_dir, out_dir, base: str | None = None, overwrite: bool = False) -> Path:
    """Load the base, resize it to the adapter's tokenizer, apply and merge the adapter, save to out_dir."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.train.model import resize_embeddings, set_generation_defaults

    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise StarchatError(
            f"{adapter_dir}: no adapter_config.json here; is it the output of a LoRA run (lora.enabled: true)?"
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise StarchatError(f"{out} exists and is not empty; pass --overwrite to replace it")
    base_path, mcfg = (base, None) if base else _base_from_adapter(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    dtype = "auto" if mcfg is None or mcfg.torch_dtype == "auto" else mcfg.torch_dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    except OSError as e:
        raise StarchatError(
            f"cannot load the base model {base_path!r}: {str(e).splitlines()[0][:200]}; pass --base"
        ) from None
    # The adapter was trained on the resized vocabulary: the base must have the same shape first.
    resize_embeddings(model, len(tokenizer))
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.config.use_cache = True
    set_generation_defaults(merged, tokenizer)

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    make_portable(tmp)
    for name in _CARRY:
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, tmp / name)
    return replace_dir(tmp, out)
