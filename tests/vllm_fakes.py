"""A stand-in for vllm.LLMEngine's public API (add_request / step / abort_request), for tests without vLLM."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Out:
    token_ids: list
    finish_reason: str | None


@dataclass
class _RequestOutput:
    request_id: str
    outputs: list
    finished: bool


class FakeLLMEngine:
    """vllm.LLMEngine: emits the token ids 5, 6, 7, ... one per step per request (as deltas) up to max_tokens."""

    def __init__(self):
        self.requests, self.aborted = {}, []

    def add_request(self, request_id, prompt, params):
        self.requests[request_id] = (prompt, params, [])

    def step(self):
        outs = []
        for rid, (_, params, made) in list(self.requests.items()):
            made.append(5 + len(made))
            done = len(made) >= params.max_tokens
            outs.append(_RequestOutput(rid, [_Out(made[-1:], "length" if done else None)], done))
            if done:
                del self.requests[rid]
        return outs

    def abort_request(self, request_ids, internal=False):
        for rid in request_ids:
            self.requests.pop(rid, None)
            self.aborted.append(rid)
