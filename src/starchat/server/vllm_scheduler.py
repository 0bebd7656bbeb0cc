"""Serving through vLLM's engine: its continuous batching and paged KV cache, streamed token by token.

One thread owns the ``vllm.LLMEngine`` of the starchat VLLMEngine (public API: ``add_request``, ``step``,
``abort_request``). It adds waiting tickets as requests (their stop strings and end-of-turn ids in vLLM's
``SamplingParams``, new tokens as deltas), calls ``step()``, feeds each request's new tokens through the
same end-token / stop-string / text logic as the transformers batcher, and aborts requests whose client
went away or that starchat ended first (a stop string ends on the same token in both, so that is rare).
Tensor parallelism is vLLM's: ``starchat serve --backend vllm --tensor-parallel-size N``.
"""

from __future__ import annotations

from starchat.server.batcher import _Row
from starchat.server.scheduler import BatchingScheduler


class VLLMScheduler(BatchingScheduler):
    kind = "vllm"

    def __init__(self, engine, max_batch: int = 256, max_queue: int = 64):
        """``engine``: a starchat VLLMEngine; ``max_batch``: requests handed to vLLM at once."""
        super().__init__(max_batch, max_queue)
        self.engine = engine
        self.core = engine.engine  # vllm.LLMEngine
        self.rows: dict[str, _Row] = {}  # by vLLM request id

    def _step(self, new: list) -> None:
        for t in new:
            rid = self.engine.request_id()
            self.rows[rid] = _Row(t, self.engine.decode, set(self.engine.eos_token_ids), "cpu")
            self.core.add_request(
                rid, self.engine.tokens_prompt(t.prompt_ids), self.engine.sampling(t.params, t.params.max_new_tokens)
            )
        self._drop_cancelled()
        if self.rows:
            self._advance()

    def _advance(self) -> None:
        for out in self.core.step():
            row = self.rows.get(out.request_id)
            if row is None:
                continue
            for tok in out.outputs[0].token_ids:  # the tokens this step made (RequestOutputKind.DELTA)
                row.done = row.push(tok)
                if row.done:
                    break
            if not row.done and out.finished:
                row.ticket.put(row.text.finish())
                row.done = "length" if out.outputs[0].finish_reason == "length" else "stop"
            if row.done:
                # Out of the rows before the client hears the end: `running` (/health) never counts a
                # request its client has seen finish.
                del self.rows[out.request_id]
                if not out.finished:
                    self.core.abort_request([out.request_id])
                row.ticket.finish(row.done, row.n_new)

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


def from_settings(engine, settings) -> VLLMScheduler:
    """The vLLM backend's scheduler (named in `starchat.inference.backends`)."""
    return VLLMScheduler(engine, max_batch=settings.max_batch, max_queue=settings.max_queue)
