"""/v1/review under hostile input: code too deep to parse, replies too large, and a neighbour's latency."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from serverkit import SlowEngine, live_server

from starchat.server import ServerSettings, create_app
from starchat.server.review_worker import ReviewBusy, ReviewRunner

BLOCK = "```python\nimport subprocess\nsubprocess.call(cmd, shell=True)\n```\n"


@pytest.fixture(scope="module")
def server():
    app = create_app(SlowEngine(delay=0.001), ServerSettings(max_body_bytes=2_000_000))
    with live_server(app) as url:
        yield url


@pytest.mark.parametrize(
    "code", ["x = " + "+".join(["1"] * 10_000), "x = " + "-" * 100_000 + "1"], ids=["10k_plus", "100k_minus"]
)
def test_code_too_deep_to_parse_is_a_finding_not_a_500(server, code):
    r = httpx.post(server + "/v1/review", json={"text": f"```python\n{code}\n```"}, timeout=60)
    assert r.status_code == 200
    assert [(f["kind"], f["block"]) for f in r.json()["findings"]] == [("syntax", 1)]
    assert "does not compile: too deeply nested" in r.json()["findings"][0]["text"]


def test_a_reply_of_9000_blocks_is_reviewed_up_to_the_bound_and_says_so(server):
    r = httpx.post(server + "/v1/review", json={"text": BLOCK * 9000}, timeout=60)
    assert r.status_code == 200
    findings = r.json()["findings"]
    limits = [f["text"] for f in findings if f["kind"] == "limit"]
    assert limits[0].startswith("not reviewed: too large: only the first 200000 of")
    assert limits[1].startswith("not reviewed: too large: only the first 32 of")
    assert {f["block"] for f in findings if f["kind"] == "security"} == set(range(1, 33))


def test_queue_beyond_its_bound_is_refused_and_a_review_past_its_deadline_restarts_the_worker():
    async def go():
        runner = ReviewRunner(max_pending=1, timeout_s=0.001)  # the worker cannot even start in 1 ms
        try:
            first = asyncio.ensure_future(runner.review("```python\nx = 1\n```", None))
            await asyncio.sleep(0)  # the first one is admitted
            with pytest.raises(ReviewBusy, match=r"already queued or running \(limit 1\)"):
                await runner.review("x", None)
            with pytest.raises(ReviewBusy, match="took longer than 0.001 s"):
                await first
            runner.timeout_s = 120
            return await runner.review("```python\ndef f(:\n```", None)  # a fresh worker answers
        finally:
            runner.close()

    assert [f["kind"] for f in asyncio.run(go())] == ["syntax"]


def test_a_full_review_queue_answers_503_with_retry_after(server, monkeypatch):
    async def busy(self, text, finish_reason):
        raise ReviewBusy("4 reviews are already queued or running (limit 4); retry later")

    monkeypatch.setattr(ReviewRunner, "review", busy)
    r = httpx.post(server + "/v1/review", json={"text": "x"})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["message"].startswith("review: 4 reviews are already queued")


def _chat_seconds(url: str) -> float:
    t0 = time.monotonic()
    r = httpx.post(
        url + "/v1/chat/completions",
        timeout=300,
        json={"messages": [{"role": "user", "content": "Sort a list"}], "max_tokens": 8, "temperature": 0},
    )
    assert r.status_code == 200
    return time.monotonic() - t0


@pytest.mark.slow
def test_review_load_does_not_starve_a_neighbours_chat(tiny_engine):
    """Six clients hammering /v1/review with ~9,000-block replies; another client's 8-token chat must stay
    near its latency without that load (was 41-45 s against 0.1-0.3 s)."""
    app = create_app(tiny_engine, ServerSettings(max_body_bytes=2_000_000))
    with live_server(app) as url:
        httpx.post(url + "/v1/review", json={"text": BLOCK}, timeout=120)  # the worker is started and warm
        _chat_seconds(url)
        baseline = max(_chat_seconds(url) for _ in range(5))
        stop, answered = threading.Event(), []

        def hammer():
            with httpx.Client(timeout=300) as c:
                while not stop.is_set():
                    answered.append(c.post(url + "/v1/review", json={"text": BLOCK * 9000}).status_code)

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the reviews are queued and running
        try:
            loaded = max(_chat_seconds(url) for _ in range(5))  # the worst: one stuck behind reviews counts
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=300)
    print(f"\nneighbour chat, worst of 5: {baseline:.3f} s alone, {loaded:.3f} s under review load")
    assert 200 in answered and set(answered) <= {200, 503}
    assert loaded < 10 * baseline + 2.0, (baseline, loaded)
