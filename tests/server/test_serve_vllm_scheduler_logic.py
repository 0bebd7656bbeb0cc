"""The vLLM scheduler's bookkeeping against a stand-in for vLLM's LLMEngine (add_request/step/abort).

The real engine is exercised in test_serve_vllm.py where a GPU exists; this covers, everywhere, how
cumulative outputs become streamed text, and that stop strings and disconnects abort the request.
"""

from __future__ import annotations

import asyncio
import sys
import types
from dataclasses import dataclass

import pytest

from starchat.inference import SamplingParams
from starchat.server.scheduler import Ticket
from starchat.server.vllm_scheduler import VLLMScheduler


@dataclass
class _Out:
    token_ids: list
    finish_reason: str | None


@dataclass
class _RequestOutput:
    request_id: str
    outputs: list
    finished: bool


class FakeCore:
    """Emits tokens 1, 2, 3... one per step for every live request; finishes at max_tokens."""

    def __init__(self):
        self.live, self.aborted = {}, []

    def add_request(self, rid, prompt, max_tokens):
        self.live[rid] = ([], max_tokens)

    def step(self):
        outs = []
        for rid, (toks, cap) in list(self.live.items()):
            toks.append(len(toks) + 1)
            done = len(toks) >= cap
            outs.append(_RequestOutput(rid, [_Out(list(toks), "length" if done else None)], done))
            if done:
                del self.live[rid]
        return outs

    def abort_request(self, rids):
        for rid in rids:
            self.live.pop(rid, None)
            self.aborted.append(rid)


class FakeVLLMEngine:
    eos_token_ids = [0]

    def __init__(self):
        self.llm = types.SimpleNamespace(llm_engine=FakeCore())

    def decode(self, ids):
        return "".join(f"t{i} " for i in ids)

    def _sampling(self, params, max_new_tokens):
        return max_new_tokens


@pytest.fixture
def sched(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    s = VLLMScheduler(FakeVLLMEngine(), max_batch=4)
    s.start()
    yield s
    s.stop()


def _run(sched, **params):
    async def go():
        t = sched.submit(Ticket([5, 6], SamplingParams(**params)))
        return await t.text(), t.result

    return asyncio.run(go())


def test_cumulative_outputs_stream_as_text_until_length(sched):
    text, result = _run(sched, max_new_tokens=4)
    assert text == "t1 t2 t3 t4 " and result.finish_reason == "length" and result.completion_tokens == 4
    assert sched.core.aborted == [] and sched.running == 0


def test_a_stop_string_ends_the_reply_and_aborts_the_vllm_request(sched):
    text, result = _run(sched, max_new_tokens=50, stop=["t3"])
    assert text == "t1 t2 " and result.finish_reason == "stop"
    assert len(sched.core.aborted) == 1 and not sched.core.live


def test_a_cancelled_ticket_is_aborted(sched):
    async def go():
        t = sched.submit(Ticket([5], SamplingParams(max_new_tokens=10_000)))
        async for _ in t.deltas():
            t.cancel()
        return t.result

    assert asyncio.run(go()).finish_reason == "cancelled"
    assert len(sched.core.aborted) == 1 and not sched.core.live
