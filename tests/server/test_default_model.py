"""The offline default model (SmolLM2-135M-Instruct GGUF on llama.cpp) behind the server, via `build()`."""

from __future__ import annotations

import openai
import pytest

from conftest import live_server
from starchat.server import ServerSettings, build

pytestmark = pytest.mark.slow


def test_default_gguf_serves_chat_and_stream():
    app = build(settings=ServerSettings(max_queue=4))
    assert app.state.scheduler.kind == "slots"
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        r = client.chat.completions.create(model="default", messages=msgs, max_tokens=24, temperature=0, seed=0)
        answer = r.choices[0].message.content
        assert "Paris" in answer
        stream = client.chat.completions.create(model="default", messages=msgs, max_tokens=24, temperature=0,
                                                seed=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer
