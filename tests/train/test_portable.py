"""Saved models read the same in transformers 4.x (TGI, older vLLM, mlx-lm) as in 5.x."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from portability import assert_same_model

from starchat.train.portable import make_portable

V5_TOKENIZER = {
    "tokenizer_class": "TokenizersBackend",
    "extra_special_tokens": ["<|system|>", "<|end|>"],
    "eos_token": "<|end|>",
}
V5_CONFIG = {
    "model_type": "llama",
    "dtype": "float32",
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
}


def _write(d: Path, tokenizer: dict, config: dict) -> Path:
    (d / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    (d / "config.json").write_text(json.dumps(config))
    (d / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    return d


def test_v5_only_fields_get_their_4x_spelling(tmp_path):
    changed = make_portable(_write(tmp_path, V5_TOKENIZER, V5_CONFIG))
    tok = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok["additional_special_tokens"] == ["<|system|>", "<|end|>"] and "extra_special_tokens" not in tok
    assert tok["chat_template"] == "{{ messages[0]['content'] }}"
    assert (cfg["rope_theta"], cfg["torch_dtype"]) == (100000.0, "float32") and "rope_scaling" not in cfg
    assert cfg["rope_parameters"] == V5_CONFIG["rope_parameters"]  # 5.x keeps reading its own field
    assert len(changed) == 5
    assert make_portable(tmp_path) == []  # idempotent


def test_scaled_rope_is_also_written_as_rope_scaling(tmp_path):
    rope = {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}
    make_portable(_write(tmp_path, {}, {**V5_CONFIG, "rope_parameters": rope}))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["rope_theta"] == 5e5 and cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0}


def test_named_extra_tokens_and_known_classes_are_left_alone(tmp_path):
    tok = {"tokenizer_class": "GPT2Tokenizer", "extra_special_tokens": {"image_token": "<img>"}, "chat_template": "x"}
    assert make_portable(_write(tmp_path, tok, {"model_type": "gpt_bigcode", "torch_dtype": "bfloat16"})) == []


@pytest.mark.slow
def test_a_llama_with_its_own_rope_theta_computes_the_same_in_transformers_4(tmp_path, base_tokenizer_dir):
    """The case that silently went wrong: 4.x read the RoPE theta of a 5.x config as 10,000."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from starchat.templates import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(base_tokenizer_dir))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=100000.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    make_portable(tmp_path)
    assert_same_model(tmp_path)
