"""Fixtures for the inference tests: engines on the tiny model, a StarChat-style checkpoint, the default GGUF."""

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir):
    from starchat.inference import load_engine

    return load_engine(str(tiny_model_dir))


@pytest.fixture(scope="session")
def gguf_engine():
    from starchat.inference import load_engine

    return load_engine(n_ctx=1024, n_threads=1)  # one thread: steady when the test run shares the CPU


@pytest.fixture(scope="session")
def starchat_checkpoint(tiny_model_dir, tmp_path_factory) -> Path:
    """Like the original StarChat releases: no chat_template in the tokenizer, a dialogue_template.json beside it."""
    from starchat.templates import DialogueTemplate

    out = tmp_path_factory.mktemp("starchat-alpha-like")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg["eos_token"] = "<|endoftext|>"  # as in starchat-alpha: <|end|> is only known from the dialogue template
    cfg_path.write_text(json.dumps(cfg))
    DialogueTemplate(name="starchat", system="You are a test assistant.").save(out)
    return out


@pytest.fixture(scope="session")
def always_end_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model rewired so its first choice is always <|end|>: its final hidden state is a constant
    vector v (ln_f weight 0, bias v) and the tied embedding row of <|end|> is a large multiple of v."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    end = tok.convert_tokens_to_ids("<|end|>")
    with torch.no_grad():
        v = torch.randn(model.config.n_embd)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(v)
        model.transformer.wte.weight[end] = v * 100
    out = tmp_path_factory.mktemp("always-end")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(base_tokenizer_dir, tmp_path_factory) -> Path:
    """A 2-layer Llama (grouped-query attention, untied output) with the StarChat tokens."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from starchat.templates import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(base_tokenizer_dir))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
