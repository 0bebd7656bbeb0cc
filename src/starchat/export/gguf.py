"""`starchat export gguf`: a transformers checkpoint (GPT-BigCode/StarCoder or Llama) -> a GGUF file.

The file is written with the ``gguf`` library (GGUFWriter, its tensor-name maps and vocab
readers), as llama.cpp's own converter does; q8_0 and q4_k_m are then made by llama.cpp's
quantizer (``llama_model_quantize``) from the f16 file, as ``llama-quantize`` would.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from starchat.errors import StarchatError
from starchat.fsio import publish_mode
from starchat.quiet import llama_log_filter

QUANTS = ("f32", "f16", "q8_0", "q4_k_m")
log = logging.getLogger(__name__)


@dataclass
class ArchSpec:
    """How one transformers architecture maps onto a llama.cpp one."""

    gguf_arch: str  # key in gguf.MODEL_ARCH
    write_params: Callable[[Any, dict], None]  # (writer, config.json) -> hyperparameters
    transform: Callable[[str, np.ndarray, dict], np.ndarray]  # per-tensor fix-ups


def _starcoder_params(w, cfg: dict) -> None:
    w.add_context_length(cfg["n_positions"])
    w.add_embedding_length(cfg["n_embd"])
    w.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
    w.add_block_count(cfg["n_layer"])
    w.add_head_count(cfg["n_head"])
    w.add_head_count_kv(1 if cfg.get("multi_query", True) else cfg["n_head"])
    w.add_layer_norm_eps(cfg.get("layer_norm_epsilon", 1e-5))


def _llama_params(w, cfg: dict) -> None:
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    w.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_rope_freq_base(float(cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)))


def _llama_unpermute(name: str, t: np.ndarray, cfg: dict) -> np.ndarray:
    """transformers stores q/k rotated-half style; llama.cpp wants the original interleaved rows."""
    n_head = cfg["num_attention_heads"]
    if name.endswith("q_proj.weight"):
        heads = n_head
    elif name.endswith("k_proj.weight"):
        heads = cfg.get("num_key_value_heads") or n_head
    else:
        return t
    return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


ARCHS = {
    "gpt_bigcode": ArchSpec("STARCODER", _starcoder_params, lambda n, t, c: t),
    "llama": ArchSpec("LLAMA", _llama_params, _llama_unpermute),
}


def export_gguf(model_dir: str | os.PathLike, out: str | os.PathLike, quant: str = "f16") -> Path:
    """Convert ``model_dir`` to ``out`` (written atomically); returns ``out``."""
    import gguf

    model_dir, out = Path(model_dir), Path(out)
    if quant not in QUANTS:
        raise StarchatError(f"unknown --quant {quant!r}: use one of {', '.join(QUANTS)}")
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise StarchatError(
            f"{cfg_path} not found: MODEL_DIR must be a transformers checkpoint "
            "(merge LoRA adapters first with `starchat export merge`)"
        )
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    spec = ARCHS.get(cfg.get("model_type"))
    if spec is None:
        raise StarchatError(
            f"{cfg_path}: model_type {cfg.get('model_type')!r} is not supported for GGUF export; "
            f"supported: {', '.join(ARCHS)}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        float_type = "f32" if quant == "f32" else "f16"
        _write(model_dir, cfg, spec, tmp, float_type, gguf)
        if quant in ("q8_0", "q4_k_m"):
            _quantize_with_llama_cpp(tmp, quant)
        publish_mode(tmp, out)  # mkstemp's 0600 would keep other users from serving the model
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _write(model_dir: Path, cfg: dict, spec: ArchSpec, path: Path, float_type: str, gguf) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    arch = gguf.MODEL_ARCH[spec.gguf_arch]
    n_layers = cfg.get("n_layer") or cfg["num_hidden_layers"]
    names = gguf.get_tensor_name_map(arch, n_layers)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    state = model.state_dict()
    tied = getattr(model.config, "tie_word_embeddings", True)
    n_vocab = model.get_input_embeddings().weight.shape[0]

    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(model_dir.name)
    spec.write_params(w, cfg)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if float_type == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _add_vocab(w, model_dir, n_vocab, gguf)
    for name, tensor in state.items():
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when there is no output tensor
        if name.endswith((".attn.bias", ".masked_bias", "rotary_emb.inv_freq")):
            continue  # buffers, not weights
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise StarchatError(
                f"{model_dir}: tensor {name!r} has no GGUF name for {spec.gguf_arch}; "
                "is this checkpoint a standard one of its architecture?"
            )
        data = spec.transform(name, tensor.numpy(), cfg)
        # As llama.cpp's converter: matrices in the chosen float type, norms/biases/1-D in f32.
        if float_type == "f16" and data.ndim == 2:
            data = data.astype(np.float16)
        w.add_tensor(new, np.ascontiguousarray(data, dtype=data.dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _add_vocab(w, model_dir: Path, n_vocab: int, gguf) -> None:
    """Tokens, types, merges, special IDs and the chat template, read by gguf's own vocab classes."""
    from gguf.vocab import BpeVocab, LlamaHfVocab, SentencePieceVocab, SpecialVocab

    vocab = None
    for cls in (BpeVocab, LlamaHfVocab, SentencePieceVocab):
        try:
            vocab = cls(model_dir)
            break
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            continue
    if vocab is None:
        raise StarchatError(
            f"{model_dir}: no tokenizer gguf can convert (a GPT-2 style BPE tokenizer.json, "
            "a Llama tokenizer.json or tokenizer.model); save the tokenizer with the model"
        )
    tokens, scores, types = [], [], []
    for text, score, typ in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(typ)
    special_ids = _special_token_ids(model_dir)
    types = [gguf.TokenType.CONTROL if i in special_ids else t for i, t in enumerate(types)]
    if len(tokens) > n_vocab:
        raise StarchatError(
            f"{model_dir}: the tokenizer has {len(tokens)} tokens but the model only {n_vocab} "
            "embeddings: resize the embeddings (model.resize_token_embeddings) and save again"
        )
    for i in range(len(tokens), n_vocab):  # embedding rows past the tokenizer (padding to a multiple)
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model(vocab.tokenizer_model)
    if vocab.tokenizer_model == "gpt2":
        w.add_tokenizer_pre(_bpe_pre_tokenizer(model_dir))
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    SpecialVocab(model_dir, load_merges=vocab.tokenizer_model == "gpt2", n_vocab=n_vocab).add_to_gguf(w, quiet=True)
    _add_fim_ids(w, model_dir)


def _add_fim_ids(w, model_dir: Path) -> None:
    """The FIM token ids under the keys llama.cpp reads (``tokenizer.ggml.fim_pre_token_id``...), so its
    /infill and starchat's own find them whatever their spelling."""
    from transformers import AutoTokenizer

    from starchat import fim
    from starchat.inference.fimvocab import from_tokenizer

    found = from_tokenizer(str(model_dir), AutoTokenizer.from_pretrained(model_dir))
    if found is None:
        return
    for key, tid in fim.gguf_metadata(found.spec, found.ids).items():
        w.add_uint32(key, tid)


def _special_token_ids(model_dir: Path) -> set[int]:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return set()
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens") or []
    return {t["id"] for t in added if t.get("special")}


def _bpe_pre_tokenizer(model_dir: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenization (its regexes are built into llama.cpp)."""
    pre = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "starcoder"  # StarCoder's and SmolLM's: each digit alone, then GPT-2's regex
    if kinds and kinds[0] == "Split" and "p{N}{1,3}" in json.dumps(steps[0]):
        return "llama-bpe"  # Llama 3 style
    log.warning("unrecognised pre-tokenizer %s in %s: llama.cpp will use its default", kinds, model_dir)
    return "default"


def _quantize_with_llama_cpp(path: Path, quant: str) -> None:
    """Re-quantize the f16 file at ``path`` in place with llama.cpp's quantizer."""
    import llama_cpp
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp logs every tensor otherwise; errors still show
    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[quant]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    dst = path.with_name(path.name + ".q")
    try:
        with llama_log_filter(FALLBACK_LINE) as noted:  # said below in terms of quality instead
            rc = llama_cpp.llama_model_quantize(str(path).encode(), str(dst).encode(), params)
        if rc != 0:
            raise StarchatError(f"llama.cpp could not quantize to {quant} (code {rc}); try --quant f16")
        os.replace(dst, path)
    finally:
        dst.unlink(missing_ok=True)
    note = fallback_note(noted.seen, quant)
    if note:
        log.warning("%s", note)


FALLBACK_LINE = r"(\d+) of (\d+) tensor\(s\) required fallback quantization"


def fallback_note(lines: list[str], quant: str) -> str | None:
    """llama.cpp's "N of M tensor(s) required fallback quantization", said as what it means for the file."""
    import re

    for line in lines:
        m = re.search(FALLBACK_LINE, line)
        if m:
            n, total = int(m.group(1)), int(m.group(2))
            return (
                f"note: {n} of {total} tensors could not use {quant}'s k-quant blocks (their rows are not a "
                "multiple of 256 values, as in small models) and were stored in the next larger type "
                "(q4_K -> q5_0, q6_K -> q8_0): quality as good or better there, the file a little larger"
            )
    return None
