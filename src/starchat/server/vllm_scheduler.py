"""Serving through vLLM's engine: its continuous batching and paged KV cache, streamed token by token.

One thread owns vLLM's ``LLMEngine`` (from the starchat VLLMEngine's ``llm``): it adds waiting tickets as
requests, calls ``step()``, feeds each request's new tokens through the same end-token / stop-string /
text logic as the transformers batcher, and aborts requests whose client went away or hit a stop string.
Tensor parallelism is vLLM's: ``starchat serve --backend vllm --tensor-parallel-size N``.
"""

from __future__ import annotations

import itertools

from starchat.server.batcher import _Row
from starchat.server.scheduler import BatchingScheduler


class VLLMScheduler(BatchingScheduler):
    kind = "vllm"

    def __init__(self, engine, max_batch: int = 256, max_queue: int = 64):
        """``engine``: a starchat VLLMEngine; ``max_batch``: requests handed to vLLM at once."""
        super().__init__(max_batch, max_queue)
        self.engine = engine
        self.core = engine.llm.llm_engine
        self.rows: dict[str, _Row] = {}  # by vLLM request id
        self._ids = itertools.count()

    def _step(self, new: list) -> None:
        from vllm.inputs import TokensPrompt

        for t in new:
            rid = f"starchat-{next(self._ids)}"
            self.rows[rid] = _Row(t, self.engine.decode, set(self.engine.eos_token_ids), "cpu")
            self.core.add_request(rid, TokensPrompt(prompt_token_ids=t.prompt_ids),
                                  self.engine._sampling(t.params, t.params.max_new_tokens))
        self._drop_cancelled()
        if self.rows:
            self._advance()

    def _advance(self) -> None:
        for out in self.core.step():
            row = self.rows.get(out.request_id)
            if row is None:
                continue
            toks = list(out.outputs[0].token_ids)  # cumulative: everything generated so far
            for tok in toks[row.seen:]:
                row.done = row.push(tok)
                if row.done:
                    break
            row.seen = len(toks)
            if not row.done and out.finished:
                row.ticket.put(row.text.finish())
                row.done = "length" if out.outputs[0].finish_reason == "length" else "stop"
            if row.done:
                if not out.finished:
                    self.core.abort_request([out.request_id])  # a stop string vLLM does not know about
                row.ticket.finish(row.done, row.n_new)
                del self.rows[out.request_id]

    def _drop_cancelled(self) -> None:
        gone = [rid for rid, r in self.rows.items() if r.ticket.cancelled]
        if gone:
            self.core.abort_request(gone)
        for rid in gone:
            r = self.rows.pop(rid)
            r.ticket.finish("cancelled", r.n_new)

    def _release_all(self) -> None:
        if self.rows:
            self.core.abort_request(list(self.rows))
