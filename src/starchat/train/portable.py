"""Rewrite a saved checkpoint's configs so that transformers 4.x reads it exactly as transformers 5 does.

Why: TGI, older vLLM, llama.cpp's `convert_hf_to_gguf.py` environments and mlx-lm still run transformers
4.x, and transformers 5 saves fields 4.x misreads. Seen with 4.57.6 on the nano-cpu output: the
tokenizer refused to load ("Tokenizer class TokenizersBackend does not exist"), and the config loaded
with RoPE theta 10,000 instead of the model's 100,000, so the logits were silently wrong. Every change
below only adds the 4.x spelling of a value or renames a class that both versions read through the
same tokenizer.json; a test loads the result in both and compares tokens and logits.

Not covered: per-layer-type RoPE (a `rope_parameters` mapping per attention type, e.g. Gemma 3), which
has no single 4.x spelling and is left as it is; custom code (`trust_remote_code`) checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

from starchat.fsio import write_text_atomic

# transformers 5's generic tokenizer class; 4.x's name for the same thing (a tokenizers.Tokenizer) is this.
_V5_ONLY_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def _tokenizer_config(cfg: dict, model_dir: Path) -> list[str]:
    changed = []
    cls = cfg.get("tokenizer_class")
    if cls in _V5_ONLY_CLASSES:
        cfg["tokenizer_class"] = _V5_ONLY_CLASSES[cls]
        changed.append(f"tokenizer_class {cls} -> {cfg['tokenizer_class']}")
    extra = cfg.get("extra_special_tokens")
    if isinstance(extra, list):
        # 4.x reads extra_special_tokens as a mapping of named tokens and fails on a list;
        # additional_special_tokens is the list both versions understand.
        cfg["additional_special_tokens"] = cfg.pop("extra_special_tokens")
        changed.append("extra_special_tokens -> additional_special_tokens")
    template = model_dir / "chat_template.jinja"
    if "chat_template" not in cfg and template.is_file():
        cfg["chat_template"] = template.read_text(encoding="utf-8")  # older 4.x releases read it only here
        changed.append("chat_template copied into tokenizer_config.json")
    return changed


def _model_config(cfg: dict) -> list[str]:
    changed = []
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in cfg:
        cfg["rope_theta"] = rope["rope_theta"]  # 4.x ignores rope_parameters and would use 10,000
        changed.append(f"rope_theta {rope['rope_theta']}")
        if rope.get("rope_type", "default") != "default" and "rope_scaling" not in cfg:
            cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
            changed.append("rope_scaling")
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
        changed.append("torch_dtype")
    return changed


def make_portable(model_dir: str | Path) -> list[str]:
    """Patch `tokenizer_config.json` and `config.json` in ``model_dir`` in place (atomically); returns what
    changed. Idempotent, and a no-op for files that are already readable by both versions."""
    model_dir = Path(model_dir)
    changed = []
    for name, fix in (
        ("tokenizer_config.json", lambda c: _tokenizer_config(c, model_dir)),
        ("config.json", _model_config),
    ):
        path = model_dir / name
        if not path.is_file():
            continue
        cfg = json.loads(path.read_text(encoding="utf-8"))
        done = fix(cfg)
        if done:
            write_text_atomic(path, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
            changed += [f"{name}: {c}" for c in done]
    return changed
