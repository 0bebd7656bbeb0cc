"""The GGUF export carries the FIM token ids where llama.cpp reads them, and llama.cpp fills the same middle."""

import pytest

from fimkit import make_fim_model
from starchat import fim
from starchat.export.gguf import export_gguf
from starchat.inference import SamplingParams, load_engine


@pytest.fixture(scope="module")
def fim_dir(base_tokenizer_dir, tmp_path_factory):
    return make_fim_model(base_tokenizer_dir, tmp_path_factory.mktemp("fim-export"), seed=1)


def test_the_gguf_holds_the_fim_keys_llama_cpp_reports(fim_dir, tmp_path):
    import llama_cpp as L

    hf = load_engine(str(fim_dir), backend="transformers").fim()
    out = export_gguf(fim_dir, tmp_path / "fim.gguf", quant="f16")
    engine = load_engine(str(out), backend="llamacpp", n_threads=1, n_ctx=256)
    meta = engine.llm.metadata
    for key, tid in fim.gguf_metadata(hf.spec, hf.ids).items():
        assert int(meta[key]) == tid, key  # written under llama.cpp's own keys
    vocab = L.llama_model_get_vocab(engine.llm.model)
    assert (
        L.llama_vocab_fim_pre(vocab),
        L.llama_vocab_fim_suf(vocab),
        L.llama_vocab_fim_mid(vocab),
        L.llama_vocab_fim_pad(vocab),
    ) == tuple(hf.ids[t] for t in (hf.spec.prefix, hf.spec.suffix, hf.spec.middle, hf.spec.pad))
    assert engine.fim().ids == hf.ids and engine.fim().stop_ids == hf.stop_ids


def test_a_model_without_fim_tokens_exports_no_fim_keys(tiny_model_dir, tmp_path):
    engine = load_engine(str(export_gguf(tiny_model_dir, tmp_path / "plain.gguf", quant="f16")), n_threads=1, n_ctx=256)
    assert not [k for k in engine.llm.metadata if "fim" in k] and engine.fim() is None


def test_llama_cpp_fills_the_same_middle_as_transformers_after_export(fim_dir, tmp_path):
    """Greedy, f32: the same prompt ids from both vocabularies, the same tokens out."""
    hf = load_engine(str(fim_dir), backend="transformers")
    ll = load_engine(str(export_gguf(fim_dir, tmp_path / "fim32.gguf", quant="f32")), n_threads=1, n_ctx=256)
    parts = {
        "prefix": "def add(a, b):\n    return ",
        "suffix": "\n\nprint(add(1, 2))\n",
        "extra": [{"filename": "util.py", "text": "import os\n"}],
    }
    prompts = [fim.build_prompt(e.fim().spec, e.fim().ids, e.encode_plain, **parts).ids for e in (hf, ll)]
    assert prompts[0] == prompts[1]
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=12, stop_token_ids=hf.fim().stop_ids)
    a, b = hf.generate(prompts[0], params), ll.generate(prompts[1], params)
    assert a.token_ids == b.token_ids and a.completion_tokens >= 1
