"""The vLLM scheduler's bookkeeping against a stand-in for vLLM's LLMEngine (add_request/step/abort).

The real engine is exercised in test_serve_vllm.py where a GPU exists; this covers, everywhere, how
delta outputs (RequestOutputKind.DELTA) become streamed text, and that stop strings and disconnects abort.
"""

from __future__ import annotations

import asyncio
import itertools
import types

import pytest

from starchat.inference import SamplingParams
from starchat.server.scheduler import Ticket
from starchat.server.vllm_scheduler import VLLMScheduler
from vllm_fakes import FakeLLMEngine


class FakeVLLMEngine:
    """The parts of starchat's VLLMEngine the scheduler uses."""

    eos_token_ids = [0]

    def __init__(self):
        self.engine = FakeLLMEngine()
        self._ids = itertools.count()

    def decode(self, ids):
        return "".join(f"t{i} " for i in ids)

    def request_id(self):
        return f"r{next(self._ids)}"

    def tokens_prompt(self, ids):
        return {"prompt_token_ids": ids}

    def sampling(self, params, max_new_tokens):
        return types.SimpleNamespace(max_tokens=max_new_tokens)


@pytest.fixture
def sched():
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
    assert text == "t5 t6 t7 t8 " and result.finish_reason == "length" and result.completion_tokens == 4
    assert sched.core.aborted == [] and sched.running == 0


def test_a_stop_string_ends_the_reply_and_aborts_the_vllm_request(sched):
    text, result = _run(sched, max_new_tokens=50, stop=["t7"])
    assert text == "t5 t6 " and result.finish_reason == "stop"
    assert len(sched.core.aborted) == 1 and not sched.core.requests


def test_a_cancelled_ticket_is_aborted(sched):
    async def go():
        t = sched.submit(Ticket([5], SamplingParams(max_new_tokens=10_000)))
        async for _ in t.deltas():
            t.cancel()
        return t.result

    assert asyncio.run(go()).finish_reason == "cancelled"
    assert len(sched.core.aborted) == 1 and not sched.core.requests
