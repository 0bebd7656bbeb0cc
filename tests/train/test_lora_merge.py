"""LoRA through peft: new-token rows train, and `export merge` resizes the base and folds the adapter in."""

from __future__ import annotations

import json

import pytest
import torch

from starchat.errors import StarchatError
from starchat.export.merge import merge_lora
from starchat.train import load_config, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter(make_overrides, plain_base_dir, tmp_path_factory):
    over = make_overrides(tmp_path_factory.mktemp("lora"))
    over.update(
        {
            "model.name_or_path": str(plain_base_dir),
            "lora.enabled": True,
            "lora.r": 4,
            "lora.alpha": 8,
            "training.num_train_epochs": 1,
            "training.learning_rate": 1e-2,
        }
    )
    return train(load_config(None, over))


def test_lora_output_is_an_adapter_that_stops_at_end(adapter):
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    meta = json.loads((adapter / "adapter_config.json").read_text())
    assert meta["trainable_token_indices"]  # the dialogue tokens' rows were trained
    gen = json.loads((adapter / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    assert gen["eos_token_id"] == AutoTokenizer.from_pretrained(adapter).convert_tokens_to_ids("<|end|>")


def test_merge_resizes_base_and_matches_the_adapter(adapter, plain_base_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.train.model import resize_embeddings

    out = merge_lora(adapter, tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(plain_base_dir)
    assert merged.get_input_embeddings().weight.shape[0] == len(tok) > base.get_input_embeddings().weight.shape[0]

    resize_embeddings(base, len(tok))
    mean_row = base.get_input_embeddings().weight[: len(tok) - 4].mean(0)
    new_ids = tok.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])
    trained_rows = merged.get_input_embeddings().weight[new_ids]
    assert not torch.allclose(trained_rows, mean_row.expand_as(trained_rows), atol=1e-4)  # the rows learned

    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    ids = tok("<|user|>\nHow do I add 2 and 3 in Python?<|end|>\n<|assistant|>\n", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model(ids).logits, atol=1e-4)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == new_ids[-1]


def test_merge_refuses_to_overwrite(adapter, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(StarchatError, match="--overwrite"):
        merge_lora(adapter, tmp_path / "taken")


def test_merge_rejects_a_full_model(tiny_model_dir, tmp_path):
    with pytest.raises(StarchatError, match="no adapter_config.json"):
        merge_lora(tiny_model_dir, tmp_path / "m")


def test_merged_model_reads_the_same_in_transformers_4(adapter, tmp_path):
    from portability import assert_same_model

    assert_same_model(merge_lora(adapter, tmp_path / "merged"))
