"""Serving through vLLM's engine: its continuous batching and paged KV cache, streamed token by token.

One thread owns vLLM's ``LLMEngine`` (from the starchat VLLMEngine's ``llm``): it adds waiting tickets as
requests, calls ``step()``, feeds each request's new tokens through the same end-token / stop-string /
text logic as the transformers batcher, and aborts requests whose client went away or hit a stop string.
Tensor parallelism is vLLM's: ``starchat serve --backend vllm --tensor-parallel-size N``.
"""

from __future__ import annotations

import itertools
import logging

from starchat.server.batcher import _Row
from starchat.server.scheduler import QueueScheduler

log = logging.getLogger("starchat.server")


class VLLMScheduler(QueueScheduler):
    kind = "vllm"

    def __init__(self, engine, max_batch: int = 256, max_queue: int = 64):
        """``engine``: a starchat VLLMEngine; ``max_batch``: requests handed to vLLM at once."""
        super().__init__(max_batch, max_queue)
        self.engine = engine
        self.core = engine.llm.llm_engine
        self.rows: dict[str, _Row] = {}
        self._ids = itertools.count()

    @property
    def running(self) -> int:
        return len(self.rows)

    def start(self) -> None:
        self._spawn(self._loop, "starchat-vllm")

    def _loop(self) -> None:
        from vllm.inputs import TokensPrompt

        while True:
            new = self.pending.take(self.capacity - len(self.rows), block=not self.rows)
            if new is None:
                self._end_all("cancelled", "server shutting down")
                return
            try:
                for t in new:
                    rid = f"starchat-{next(self._ids)}"
                    self.rows[rid] = _Row(t, self.engine.decode, set(self.engine.eos_token_ids), "cpu")
                    self.core.add_request(rid, TokensPrompt(prompt_token_ids=t.prompt_ids),
                                          self.engine._sampling(t.params, t.params.max_new_tokens))
                self._drop_cancelled()
                if self.rows:
                    self._step()
            except Exception as e:  # fail what is running, keep serving
                log.exception("vLLM step failed")
                self._end_all("error", f"{type(e).__name__}: {e}")

    def _step(self) -> None:
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

    def _end_all(self, reason: str, why: str) -> None:
        if self.rows:
            try:
                self.core.abort_request(list(self.rows))
            except Exception:  # the engine itself may be what failed
                log.exception("vLLM abort failed")
        for r in self.rows.values():
            r.ticket.finish(reason, r.n_new, why)
        self.rows.clear()
