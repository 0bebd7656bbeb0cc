"""The vLLM engine's use of vLLM's API, on the CPU: a stand-in `vllm` package that accepts only what vLLM 0.33
accepts (the field names of its SamplingParams, its RequestOutputKind) and records what it is given.

The real thing runs in test_vllm.py where vLLM and CUDA exist; this checks the parameter mapping, the chat
template taken from the model, the end-of-turn ids handed to vLLM, streaming deltas and the abort on close.
"""

from __future__ import annotations

import enum
import sys
import types

import pytest

from starchat.errors import StarchatError
from starchat.inference import SamplingParams
from starchat.inference.vllm import VLLMEngine, llm_args
from vllm_fakes import FakeLLMEngine, _Out, _RequestOutput

# vllm 0.33.0, vllm/sampling_params.py: the fields of SamplingParams a caller may set (msgspec rejects others).
VLLM_SAMPLING_FIELDS = {
    "n",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "temperature",
    "watermarking",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "max_tokens",
    "min_tokens",
    "logprobs",
    "prompt_logprobs",
    "detokenize",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "include_stop_str_in_output",
    "output_kind",
    "stream_interval",
    "structured_outputs",
    "logit_bias",
    "allowed_token_ids",
    "extra_args",
    "bad_words",
}


class RequestOutputKind(enum.Enum):  # vllm.sampling_params.RequestOutputKind
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class FakeSamplingParams:
    def __init__(self, **kw):
        unknown = set(kw) - VLLM_SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"vllm.SamplingParams has no field {sorted(unknown)}")
        self.__dict__.update(kw)


class FakeLLM:
    made: list = []

    def __init__(self, **kw):
        from transformers import AutoTokenizer

        self.kwargs = kw
        FakeLLM.made.append(self)
        self.llm_engine = FakeLLMEngine()
        self.tokenizer = AutoTokenizer.from_pretrained(kw["model"])
        self.model_config = types.SimpleNamespace(
            max_model_len=kw.get("max_model_len", 512), hf_config=types.SimpleNamespace(eos_token_id=None)
        )
        self.generated = []

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=True):
        self.generated.append((prompts, params))
        return [
            _RequestOutput(str(i), [_Out([5, 6, 7][: params.max_tokens], "length")], True)
            for i, _ in enumerate(prompts)
        ]


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    sp = types.ModuleType("vllm.sampling_params")
    sp.SamplingParams, sp.RequestOutputKind = FakeSamplingParams, RequestOutputKind
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    vllm.LLM, vllm.SamplingParams, vllm.sampling_params, vllm.inputs = FakeLLM, FakeSamplingParams, sp, inputs
    for name, mod in (("vllm", vllm), ("vllm.sampling_params", sp), ("vllm.inputs", inputs)):
        monkeypatch.setitem(sys.modules, name, mod)
    FakeLLM.made = []
    return vllm


def test_engine_options_map_to_vllms_llm_arguments():
    args = llm_args("m", tensor_parallel_size=4, gpu_memory_utilization=0.5, n_ctx=2048, n_threads=3)
    assert args == dict(
        model="m", tensor_parallel_size=4, dtype="auto", seed=0, gpu_memory_utilization=0.5, max_model_len=2048
    )  # n_threads is llama.cpp's: dropped
    with pytest.raises(StarchatError, match="gpu-memory-utilization"):
        llm_args("m", gpu_memory_utilization=1.5)
    with pytest.raises(StarchatError, match="tensor-parallel-size"):
        llm_args("m", tensor_parallel_size=0)


def test_sampling_hands_stops_and_end_of_turn_ids_to_vllm(fake_vllm, tiny_model_dir):
    engine = VLLMEngine(str(tiny_model_dir), tensor_parallel_size=2, gpu_memory_utilization=0.3)
    assert FakeLLM.made[0].kwargs["tensor_parallel_size"] == 2
    end = engine.tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in engine.eos_token_ids
    p = engine.sampling(
        SamplingParams(temperature=0.7, top_k=0, top_p=0.9, repetition_penalty=1.2, seed=3, stop=["\n\n"]), 64
    )
    assert (p.temperature, p.top_k, p.top_p, p.repetition_penalty, p.seed, p.max_tokens) == (0.7, 0, 0.9, 1.2, 3, 64)
    assert p.stop == ["\n\n"] and end in p.stop_token_ids and p.output_kind is RequestOutputKind.DELTA
    assert engine.sampling(SamplingParams(), 8, stream=False).output_kind is RequestOutputKind.FINAL_ONLY


def test_the_prompt_is_the_models_own_chat_template_as_token_ids(fake_vllm, tiny_model_dir):
    engine = VLLMEngine(str(tiny_model_dir))
    msgs = [{"role": "user", "content": "hi"}]
    expected = engine.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert engine.tokenizer.decode(engine.prompt_ids(msgs)) == expected
    engine.generate_batch([msgs, msgs], SamplingParams(max_new_tokens=2))
    prompts, params = engine.llm.generated[-1]
    assert prompts[0] == {"prompt_token_ids": engine.prompt_ids(msgs)} and params.max_tokens == 2


def test_a_stream_takes_each_steps_delta_and_aborts_when_closed(fake_vllm, tiny_model_dir):
    engine = VLLMEngine(str(tiny_model_dir))
    done = engine.generate("abc", SamplingParams(max_new_tokens=3, temperature=0))
    assert done.token_ids == [5, 6, 7] and done.finish_reason == "length" and not engine.engine.aborted
    gen = engine.stream("abc", SamplingParams(max_new_tokens=100))
    next(gen)
    gen.close()
    assert len(engine.engine.aborted) == 1 and not engine.engine.requests
