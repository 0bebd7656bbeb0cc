"""The vLLM backend: a clear error without vLLM; a real run only where vLLM and CUDA exist."""

import importlib.util

import pytest

from starchat.errors import StarchatError
from starchat.inference import SamplingParams, load_engine

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_without_vllm_the_backend_says_how_to_get_it(tiny_model_dir):
    with pytest.raises(StarchatError, match=r"pip install 'starchat\[vllm\]'"):
        load_engine(str(tiny_model_dir), backend="vllm")


@pytest.mark.gpu
def test_vllm_generates_like_the_other_backends(tiny_model_dir):
    torch = pytest.importorskip("torch")
    if not HAS_VLLM or not torch.cuda.is_available():
        pytest.skip("needs vLLM and a CUDA GPU")
    engine = load_engine(str(tiny_model_dir), backend="vllm", gpu_memory_utilization=0.3)
    msgs = [{"role": "user", "content": "hi"}]
    params = SamplingParams(temperature=0.8, max_new_tokens=16, seed=0)
    one = engine.generate(msgs, params)
    assert one.text == "".join(engine.stream(msgs, params))
    assert [c.text for c in engine.generate_batch([msgs, msgs], params)] == [one.text, one.text]
