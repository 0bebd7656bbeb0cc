"""Load the base model for training (the tokenizer and GGUF bases: starchat.models) and wrap LoRA adapters."""

from __future__ import annotations

import importlib.util
import os

from starchat.errors import StarchatError
from starchat.models import cache_dir, dequantize_gguf, find_gguf, load_tokenizer, resize_embeddings, resolve_model_path  # noqa: F401  (loading moved to starchat.models, the layer every stage may use)
from starchat.templates import get_template
from starchat.train.config import LoraConfig, ModelConfig


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
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        # The Trainer never moves a quantized model, so it must be loaded (and quantized) on this rank's
        # device: its own GPU under DDP, or the CPU (bitsandbytes has CPU kernels; slow, for checks).
        gpu = torch.cuda.is_available() and not use_cpu
        kwargs["device_map"] = {"": f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"} if gpu else "cpu"
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except OSError as e:
        raise StarchatError(f"model.name_or_path: cannot load {model_path!r}: {str(e).splitlines()[0][:300]}") from None
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


def new_token_ids(tokenizer, template: str) -> list[int]:
    """IDs of the template's special tokens (the rows LoRA must also train)."""
    return [tokenizer.convert_tokens_to_ids(t) for t in get_template(template).special_tokens]


def apply_lora(
    model,
    lcfg: LoraConfig,
    tokenizer,
    template: str,
    quantized: bool = False,
    extra_ids: list[int] | tuple[int, ...] = (),
):
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
    return PeftLoraConfig(
        r=lcfg.r,
        lora_alpha=lcfg.alpha,
        lora_dropout=lcfg.dropout,
        target_modules=lcfg.target_modules,
        task_type="CAUSAL_LM",
        **kwargs,
    )


def _module_name(model, module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name.split(".")[-1]
    raise StarchatError("could not find the embedding module by name for LoRA's trainable_token_indices")
