"""The llama.cpp backend on the default offline model (SmolLM2-135M-Instruct GGUF)."""

import pytest

from starchat.errors import StarchatError
from starchat.inference import SamplingParams, load_engine

from .test_engine_hf import boundary_stop

MSGS = [{"role": "user", "content": "Write a Python function that reverses a string"}]


@pytest.mark.slow
def test_default_model_answers_and_stops_on_its_end_token(gguf_engine):
    c = gguf_engine.generate(MSGS, SamplingParams(temperature=0, max_new_tokens=120))
    assert c.finish_reason == "stop" and c.completion_tokens < 120
    assert "def " in c.text and "<|im_end|>" not in c.text


def test_stream_matches_generate_with_seed(gguf_engine):
    p = SamplingParams(temperature=0.9, max_new_tokens=24, seed=3)
    assert "".join(gguf_engine.stream(MSGS, p)) == gguf_engine.generate(MSGS, p).text


def test_stop_string_spanning_tokens(gguf_engine):
    greedy = SamplingParams(temperature=0, max_new_tokens=30)
    full = gguf_engine.generate(MSGS, greedy)
    stop = boundary_stop(gguf_engine, full.token_ids, full.text)
    cut = gguf_engine.generate(MSGS, greedy.replace(stop=[stop]))
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]


def test_prompt_uses_the_gguf_chat_template(gguf_engine):
    text = gguf_engine.llm.detokenize(gguf_engine.encode_prompt(MSGS), special=True).decode()
    assert gguf_engine.format.source == "GGUF"
    assert text.endswith(
        "<|im_start|>user\nWrite a Python function that reverses a string<|im_end|>\n<|im_start|>assistant\n"
    )


def test_broken_gguf_gives_one_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(StarchatError, match="could not load"):
        load_engine(str(bad))


def test_amx_builds_load_without_weight_repacking(gguf_engine, monkeypatch):
    """A native build on an AMX CPU segfaulted on every prompt of 2+ tokens (AMX repacking): it is left off."""
    import llama_cpp

    from starchat.inference.llamacpp import KEEP_AMX_ENV, amx_repacking

    if b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info():
        pytest.skip("this llama.cpp build has no AMX")
    assert gguf_engine.llm.model_params.use_extra_bufts is False
    reply = gguf_engine.generate(
        [{"role": "user", "content": "Name a sorting algorithm."}], SamplingParams(max_new_tokens=4, seed=0)
    )
    assert reply.completion_tokens > 0
    monkeypatch.setenv(KEEP_AMX_ENV, "1")
    assert not amx_repacking(llama_cpp)
