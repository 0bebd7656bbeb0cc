"""`--backend vllm`: the server streams through vLLM's engine. Runs only where vLLM and a CUDA GPU exist."""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util

import openai
import pytest
from serverkit import live_server

from starchat.server import ServerSettings, create_app

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        pytest.skip("needs vLLM and a CUDA GPU")
    from starchat.inference import load_engine

    return load_engine(str(tiny_model_dir), backend="vllm", gpu_memory_utilization=0.3)


def test_vllm_server_chats_streams_and_batches(vllm_engine):
    app = create_app(vllm_engine, ServerSettings(max_batch=64))
    assert app.state.scheduler.kind == "vllm"
    msgs = [{"role": "user", "content": "hi"}]
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
        kw = dict(
            model=vllm_engine.model_name,
            messages=msgs,
            max_tokens=16,
            temperature=0,
            extra_body={"repetition_penalty": 2.0},
        )
        full = client.chat.completions.create(**kw)
        assert full.usage.completion_tokens >= 1
        streamed = "".join(
            c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw) if c.choices
        )
        assert streamed == full.choices[0].message.content
        with cf.ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda _: client.chat.completions.create(**kw), range(8)))
        assert {o.choices[0].message.content for o in outs} == {full.choices[0].message.content}
