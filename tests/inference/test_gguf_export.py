"""GGUF export round trips: the file loads in llama-cpp-python and computes what transformers computes."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from starchat.errors import StarchatError
from starchat.export.gguf import export_gguf
from starchat.inference import SamplingParams, load_engine

TEXT = "<|user|>\ndef add(a, b):\n    return a + b<|end|>\n<|assistant|>"


def _llama(path):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False)


def _hf_logits(model_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_f32_export_matches_transformers_tokens_and_logits(fixture, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    out = export_gguf(model_dir, tmp_path / "m.gguf", quant="f32")
    llm = _llama(out)
    ids = AutoTokenizer.from_pretrained(model_dir)(TEXT, add_special_tokens=False)["input_ids"]
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == ids  # same tokenizer
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)])
    np.testing.assert_allclose(ours, _hf_logits(model_dir, ids), atol=2e-3, rtol=1e-3)  # same network


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_quantized_export_loads_and_chats_with_the_saved_template(tiny_model_dir, tmp_path, quant):
    out = export_gguf(tiny_model_dir, tmp_path / f"m-{quant}.gguf", quant=quant)
    engine = load_engine(str(out))
    assert engine.format.source == "GGUF"  # the checkpoint's chat_template travelled into the file
    prompt = engine.llm.detokenize(engine.encode_prompt([{"role": "user", "content": "hi"}]), special=True)
    assert prompt.decode() == "<|system|>\n<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>"
    c = engine.generate(
        [{"role": "user", "content": "hi"}], SamplingParams(temperature=0, repetition_penalty=3.0, max_new_tokens=6)
    )
    assert c.completion_tokens >= 1 and (c.finish_reason == "stop" or len(c.token_ids) == 6)


def test_export_writes_atomically_and_rejects_unknown_architectures(tiny_model_dir, tmp_path):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StarchatError, match="model_type 'mamba' is not supported"):
        export_gguf(bad, tmp_path / "x.gguf")
    with pytest.raises(StarchatError, match="config.json not found"):
        export_gguf(tmp_path / "nowhere", tmp_path / "x.gguf")
    assert not list(tmp_path.glob("x.gguf*"))  # no partial file left behind


def test_cli_export_gguf(tiny_model_dir, tmp_path, capsys):
    from starchat.cli import main

    assert main(["export", "gguf", str(tiny_model_dir), str(tmp_path / "cli.gguf"), "--quant", "f16"]) == 0
    assert (tmp_path / "cli.gguf").stat().st_size > 0 and "GGUF written" in capsys.readouterr().out


def test_exported_gguf_follows_the_umask_so_another_user_can_serve_it(tiny_model_dir, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = export_gguf(tiny_model_dir, tmp_path / "m.gguf", quant="f16")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not mkstemp's 0600
