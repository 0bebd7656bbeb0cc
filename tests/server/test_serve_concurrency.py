"""Scheduling under load: a client that goes away frees its slot, and a full queue answers 503."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from serverkit import SlowEngine, live_server

from starchat.server import ServerSettings, create_app

MSG = [{"role": "user", "content": "Write a long story."}]


def _wait_for(cond, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _read_some_then_hang_up(url: str, n_chunks: int) -> list[str]:
    """Open a streaming chat, read a few SSE lines, close the connection mid-stream."""
    got = []
    with httpx.stream(
        "POST", url + "/v1/chat/completions", timeout=30, json={"messages": MSG, "stream": True, "max_tokens": 400}
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                got.append(line)
            if len(got) >= n_chunks:
                break
    return got


def test_disconnect_mid_stream_frees_the_slot():
    engine = SlowEngine(delay=0.02)
    app = create_app(engine, ServerSettings(max_queue=4))
    with live_server(app) as url:
        assert len(_read_some_then_hang_up(url, 4)) == 4
        # The one slot must come free long before the 400 tokens (8 s) would have finished.
        assert _wait_for(lambda: engine.active == 0 and app.state.scheduler.running == 0, timeout=3)
        r = httpx.post(url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 3}, timeout=10)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "w1 w2 w3 "


def test_disconnect_mid_stream_frees_the_batch_row(tiny_engine):
    app = create_app(tiny_engine, ServerSettings(max_batch=2))
    with live_server(app) as url:
        _read_some_then_hang_up(url, 3)
        assert _wait_for(lambda: httpx.get(url + "/health").json()["running"] == 0, timeout=5)
        r = httpx.post(url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 4}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


def test_non_streaming_client_that_gives_up_is_cancelled():
    engine = SlowEngine(delay=0.02)
    app = create_app(engine, ServerSettings())
    with live_server(app) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 400}, timeout=0.3)
        assert _wait_for(lambda: engine.active == 0, timeout=3)


def test_full_queue_answers_503_with_retry_after():
    engine = SlowEngine(delay=0.05)
    app = create_app(engine, ServerSettings(max_queue=1, retry_after_s=3))
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=30)
        results = []

        def call():
            results.append(client.chat.completions.create(model=engine.model_name, messages=MSG, max_tokens=20))

        running = threading.Thread(target=call)
        running.start()
        assert _wait_for(lambda: engine.active == 1)
        queued = threading.Thread(target=call)
        queued.start()
        assert _wait_for(lambda: app.state.scheduler.stats()["queued"] == 1)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model=engine.model_name, messages=MSG, max_tokens=20)
        assert e.value.status_code == 503
        assert e.value.response.headers["retry-after"] == "3"
        assert e.value.body["code"] == "overloaded"
        running.join(30)
        queued.join(30)
        # The two accepted requests still complete in full.
        assert [r.choices[0].finish_reason for r in results] == ["length", "length"]
