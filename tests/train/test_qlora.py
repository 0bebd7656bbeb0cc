"""QLoRA for real on the CPU: a 4-bit NF4 base (bitsandbytes' CPU kernels), LoRA adapters, trained new-token rows, merge."""

from __future__ import annotations

import json

import pytest

from starchat.export.merge import merge_lora
from starchat.train import load_config, train

pytestmark = pytest.mark.slow


def _is_bnb_4bit(module) -> bool:
    """bitsandbytes' own 4-bit layer (peft's LoRA wrapper around it has the same class name)."""
    return type(module).__name__ == "Linear4bit" and type(module).__module__.startswith("bitsandbytes")


@pytest.fixture(scope="module")
def base_128(make_plain_base):
    """128 wide: bitsandbytes' CPU 4-bit packing needs dimensions in blocks of 64 or more (32 fails its
    `N % block_n` check)."""
    return make_plain_base(128, seed=2)


@pytest.fixture(scope="module")
def qlora(make_overrides, base_128, tmp_path_factory):
    pytest.importorskip("bitsandbytes")  # in the dev extras: CI has it
    from transformers import TrainerCallback

    seen = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen["4bit"] = sum(_is_bnb_4bit(m) for m in model.modules())
            seen["trainable"] = sorted(n for n, p in model.named_parameters() if p.requires_grad)

    over = make_overrides(tmp_path_factory.mktemp("qlora"))
    over.update(
        {
            "model.name_or_path": str(base_128),
            "model.load_in_4bit": True,
            "lora.enabled": True,
            "lora.r": 8,
            "lora.alpha": 16,
            "training.num_train_epochs": 2,
            "training.learning_rate": 1e-2,
        }
    )
    out = train(load_config(None, over), callbacks=[Inspect()])
    return out, seen


def test_the_base_is_4bit_and_only_adapters_and_new_token_rows_train(qlora):
    _, seen = qlora
    assert seen["4bit"] == 8  # c_attn, c_proj, c_fc, mlp.c_proj in each of 2 blocks
    assert seen["trainable"] and all("lora_" in n or "trainable_tokens" in n for n in seen["trainable"])
    assert any("trainable_tokens" in n for n in seen["trainable"])  # the <|end|> etc. rows


def test_validation_loss_drops_and_the_adapter_records_the_4bit_run(qlora):
    out, _ = qlora
    res = json.loads((out / "trainer_results.json").read_text())
    evals = [e["eval_loss"] for e in res["log_history"] if "eval_loss" in e]
    assert evals[-1] < evals[0]
    assert json.loads((out / "adapter_config.json").read_text())["trainable_token_indices"]
    assert "load_in_4bit: true" in (out / "training_config.yaml").read_text()


def test_merge_gives_a_standalone_full_precision_model(qlora, base_128, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = qlora
    merged_dir = merge_lora(out, tmp_path / "merged")
    tok, merged = AutoTokenizer.from_pretrained(merged_dir), AutoModelForCausalLM.from_pretrained(merged_dir)
    assert merged.get_input_embeddings().weight.shape[0] == len(tok)
    assert not any(_is_bnb_4bit(m) for m in merged.modules())  # folded into plain weights
    assert json.loads((merged_dir / "generation_config.json").read_text())["eos_token_id"] == tok.convert_tokens_to_ids(
        "<|end|>"
    )
