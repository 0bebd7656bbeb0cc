"""Admission and failure isolation: the shared KV cache never overflows, one bad request fails alone.

Both batchers serve the tiny model (transformers, and its f32 GGUF on llama.cpp). Its end tokens are
taken away from the scheduler, so every request generates exactly max_tokens tokens: the cache fills
for sure, as it would with long answers.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import time
import types

import httpx
import pytest
from serverkit import live_server

from starchat.server import ServerSettings, create_app

MSG = [{"role": "user", "content": "Write a long story."}]


def _no_end(engine):
    """A shallow copy of ``engine`` that never ends a reply early (its model is shared)."""
    e = copy.copy(engine)
    e.eos_token_ids = [-1]
    return e


def _app(engine, settings):
    app = create_app(engine, settings)
    ctx = getattr(app.state.scheduler, "ctx", None)
    if ctx is not None:  # llama.cpp: one thread, steady when the test run shares the CPU (as gguf_engine)
        import llama_cpp

        llama_cpp.llama_set_n_threads(ctx, 1, 1)
    return app


def _chat(url, max_tokens, **kw):
    body = {"messages": MSG, "max_tokens": max_tokens, "temperature": 1.0, **kw}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


def _sixteen(url, max_tokens):
    with cf.ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda i: _chat(url, max_tokens, seed=i), range(16)))


def _wait_running(url, timeout=30.0):
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/health").json()["running"] < 1:
        assert time.monotonic() < deadline, "the first request never started"
        time.sleep(0.01)


@pytest.fixture(params=["transformers", "llamacpp"])
def engine(request, tiny_engine):
    return _no_end(tiny_engine if request.param == "transformers" else request.getfixturevalue("tiny_llama_engine"))


def test_sixteen_requests_beyond_the_kv_cache_wait_their_turn_and_all_succeed(engine):
    # 16 x (prompt + 150) is ~4x the 1024 positions: at most ~6 run at once, the rest wait in the queue.
    app = _app(engine, ServerSettings(max_batch=16, kv_tokens=1024))
    with live_server(app) as url:
        got = _sixteen(url, 150)
        assert [r.status_code for r in got] == [200] * 16, [r.text for r in got if r.status_code != 200][:1]
        assert all(r.json()["usage"]["completion_tokens"] == 150 for r in got)
        assert all(r.json()["choices"][0]["finish_reason"] == "length" for r in got)
        health = httpx.get(url + "/health").json()
        assert health["running"] == 0 and health["queued"] == 0 and health["slots"] == 16
        if "peak_batch" in health:  # transformers: rows x longest row stayed within the cache
            assert 1 < health["peak_batch"] <= 1024 // 150
        else:
            assert health["kv_reserved"] == 0 and health["kv_tokens"] == 1024
        # every slot came back: a second wave of 16 all succeeds too
        assert [r.status_code for r in _sixteen(url, 20)] == [200] * 16


def test_a_request_that_can_never_fit_is_400_and_the_others_go_on(tiny_engine):
    app = _app(_no_end(tiny_engine), ServerSettings(kv_tokens=300))
    with live_server(app) as url, cf.ThreadPoolExecutor(2) as pool:
        ok = pool.submit(_chat, url, 100)
        bad = _chat(url, 400)
        assert bad.status_code == 400 and "--kv-tokens" in bad.json()["error"]["message"]
        assert ok.result().status_code == 200 and ok.result().json()["usage"]["completion_tokens"] == 100


class _FailingDecode(types.SimpleNamespace):
    """llama_cpp with a llama_decode that fails once on a step admitting new prompts (as a full cache would)."""

    def __init__(self, real):
        super().__init__(real=real, failed=0, ready=False)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def llama_decode(self, ctx, batch):
        distinct = {batch.seq_id[i][0] for i in range(batch.n_tokens)}
        if self.ready and not self.failed and batch.n_tokens > len(distinct):  # a prompt is in this batch
            self.failed += 1
            return 1
        return self.real.llama_decode(ctx, batch)


def test_llama_decode_failing_on_admission_fails_only_the_new_request(tiny_llama_engine):
    import llama_cpp

    app = _app(_no_end(tiny_llama_engine), ServerSettings(max_batch=4))
    fake = _FailingDecode(llama_cpp)
    app.state.scheduler.L = fake
    with live_server(app) as url, cf.ThreadPoolExecutor(2) as pool:
        running = pool.submit(_chat, url, 300)
        _wait_running(url)
        fake.ready = True
        # Another question: with the running one's, the prompt cache would leave a single token to prefill.
        refused = _chat(url, 10, messages=[{"role": "user", "content": "Something else entirely, please."}])
        assert fake.failed == 1
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "2"
        assert running.result().status_code == 200
        assert running.result().json()["usage"]["completion_tokens"] == 300
        assert httpx.get(url + "/health").json()["running"] == 0
        assert [r.status_code for r in _sixteen(url, 10)] == [200] * 16  # no slot was lost


def test_a_failed_prefill_fails_only_its_requests(tiny_engine):
    app = _app(_no_end(tiny_engine), ServerSettings())
    batcher = app.state.scheduler
    real, calls = batcher._prefill_rows, []

    def prefill(rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated) /secret/path")
        return real(rows)

    batcher._prefill_rows = prefill
    with live_server(app) as url, cf.ThreadPoolExecutor(2) as pool:
        running = pool.submit(_chat, url, 300)
        _wait_running(url)
        failed = _chat(url, 10)
        assert failed.status_code == 500 and "/secret/path" not in failed.text  # no internal text
        assert running.result().status_code == 200
        assert running.result().json()["usage"]["completion_tokens"] == 300


@pytest.mark.parametrize("seed", [2**64, 2**32, -1])
def test_out_of_range_seed_is_refused_at_validation_and_others_go_on(engine, seed):
    app = _app(engine, ServerSettings())
    with live_server(app) as url, cf.ThreadPoolExecutor(2) as pool:
        running = pool.submit(_chat, url, 200, seed=7)
        bad = _chat(url, 5, seed=seed)
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "seed"
        assert running.result().status_code == 200
        assert running.result().json()["usage"]["completion_tokens"] == 200


def test_no_more_sequences_than_slots_hold_cells(tiny_llama_engine):
    """As llama-server's slots each keep one prompt: on a one-slot server a second, unrelated chat takes the
    first one's sequence over (cached cells widen every later step's attention), and what it shares with it
    (the template's start) is still reused; its reply is the one a fresh server gives."""
    greedy = {"temperature": 0}
    other = [{"role": "user", "content": "Name a colour."}]

    def serve(messages_list):
        app = _app(tiny_llama_engine, ServerSettings(max_batch=1, kv_tokens=1024))
        with live_server(app) as url:
            replies = [_chat(url, 12, messages=m, **greedy).json() for m in messages_list]
            texts = [r["choices"][0]["message"]["content"] for r in replies]
            deadline = time.monotonic() + 10  # the reply is sent before its sequence is put in the cache
            while app.state.scheduler.stats()["prompt_cache"]["sequences"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            return texts, app.state.scheduler.stats()["prompt_cache"]

    texts, cache = serve([MSG, other])
    assert cache["sequences"] == 1 and cache["reused_tokens"] > 0
    assert serve([other])[0] == texts[1:]


def test_cached_sequences_give_way_when_their_cells_are_needed(tiny_llama_engine):
    """The prompt cache keeps finished sequences only while every running reservation still fits: with room
    for about two, five long requests in a row all finish, and the two newest stay cached."""
    app = _app(_no_end(tiny_llama_engine), ServerSettings(max_batch=2, kv_tokens=1024))
    with live_server(app) as url:
        for i in range(5):
            r = _chat(url, 400, messages=[{"role": "user", "content": f"Story number {i}."}])
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 400
        deadline = time.monotonic() + 10  # the reply is sent before its sequence is put in the cache
        while app.state.scheduler.stats()["prompt_cache"]["sequences"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.scheduler.stats()["prompt_cache"]["sequences"] == 2
