"""Parallel slots on llama.cpp: many sequences in one llama.cpp context, decoded together.

Like llama.cpp's own server (`-np`): each request gets a sequence id (a slot) in a context whose KV
cache is shared by all slots. Every step sends one `llama_batch` holding the next token of each running
sequence plus the prompts of newly admitted ones, so all slots share each pass over the weights. Rows
are sampled each by its own llama.cpp sampler chain, built like the chat's (`inference.llamacpp.sampler_chain`),
so a seed gives the same text in `chat`, `serve` and `eval`; they finish through the same text/stop logic as the
transformers batcher; a finished or cancelled sequence has its KV cells removed and its slot reused.
"""

from __future__ import annotations

import logging

from starchat.inference.llamacpp import sampler_chain
from starchat.server.batcher import _Row, _size, admit_rows
from starchat.server.scheduler import BatchingScheduler, Ticket

log = logging.getLogger("starchat.server")


class LlamaCppBatcher(BatchingScheduler):
    kind = "llama.cpp-slots"

    def __init__(self, engine, slots: int = 16, max_queue: int = 64, kv_tokens: int = 16384):
        """``engine``: a starchat LlamaCppEngine (its weights are shared, the context is our own);
        ``kv_tokens``: KV cells shared by all slots, at least one full context."""
        import llama_cpp as L

        super().__init__(slots, max_queue)
        self.L, self.engine = L, engine
        self.eos_ids = set(engine.eos_token_ids)
        cp = L.llama_context_default_params()
        cp.n_ctx = max(engine.context_length, min(slots * engine.context_length, kv_tokens))
        cp.n_batch = cp.n_ctx  # a whole prompt fits in one call; llama.cpp splits it into micro-batches
        cp.n_ubatch = 512
        cp.n_seq_max = slots
        cp.kv_unified = True  # one pool of cells: short chats leave room for long ones
        cp.n_threads = cp.n_threads_batch = engine.n_threads  # starchat.threads' choice, or --threads
        cp.flash_attn_type = engine.llm.context_params.flash_attn_type  # the chat's attention: the same logits
        self.ctx = L.llama_init_from_model(engine.llm.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the serving context (out of memory?)")
        self.n_ctx = cp.n_ctx
        self.n_batch = cp.n_batch  # tokens the llama_batch buffer holds
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(engine.llm.model))
        self.penalty_last_n = engine.llm.last_n_tokens_size  # the chat's repetition-penalty window
        self.batch = L.llama_batch_init(cp.n_batch, 0, 1)

    def stats(self) -> dict:
        return {**super().stats(), "kv_tokens": self.n_ctx,
                "kv_reserved": sum(_size(r.ticket) for r in list(self.rows))}

    def refusal(self, prompt_len: int, max_new_tokens: int) -> str | None:
        if prompt_len + max_new_tokens > min(self.n_ctx, self.n_batch):
            return (f"the prompt ({prompt_len} tokens) plus max_tokens={max_new_tokens} is more than the "
                    f"{self.n_ctx}-cell KV cache of this server (--kv-tokens): shorten it or lower max_tokens")
        return None

    def _fits(self, ticket: Ticket, taken: list[Ticket]) -> bool | None:
        """Admission: each request reserves its prompt + max_new_tokens cells of the shared KV cache, and one
        step's batch (a token per running row + the new prompts) must fit the llama_batch buffer, so
        llama_decode never runs out of either; a request that does not fit waits for running ones to end."""
        cells = sum(_size(r.ticket) for r in self.rows) + sum(_size(t) for t in taken) + _size(ticket)
        tokens = len(self.rows) + sum(len(t.prompt_ids) for t in taken) + len(ticket.prompt_ids)
        if cells <= self.n_ctx and tokens <= self.n_batch:
            return True
        return self._refuse_or_wait(ticket, taken)

    def _new_row(self, t: Ticket) -> _Row:
        r = _Row(t, self.engine.decode, self.eos_ids, "cpu")
        r.chain = sampler_chain(self.L, t.params, self.n_vocab, self.penalty_last_n)
        # The lowest sequence id no running row holds: derived, never kept in a list that a failure could leak.
        used = {x.seq for x in self.rows}
        r.seq = next(s for s in range(self.capacity) if s not in used)
        self.rows.append(r)
        return r

    def _step(self, new: list[Ticket]) -> None:
        b, n = self.batch, 0

        def add(tok: int, pos: int, seq: int, want_logits: bool) -> int:
            nonlocal n
            b.token[n], b.pos[n], b.n_seq_id[n], b.seq_id[n][0], b.logits[n] = tok, pos, 1, seq, want_logits
            n += 1
            return n - 1

        for r in self.rows:  # the next token of every running sequence
            r.out = add(r.ids[-1], len(r.ids) - 1, r.seq, True)
        running = n
        fresh = admit_rows(new, self._new_row)
        for r in fresh:
            for pos, tok in enumerate(r.ticket.prompt_ids):
                r.out = add(tok, pos, r.seq, pos == len(r.ticket.prompt_ids) - 1)
        b.n_tokens = n
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0 and fresh:
            rc = self._without(fresh, running, rc)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}: the {self.n_ctx}-token KV cache shared by the slots "
                               "is full; raise --kv-tokens, or lower --max-batch or the requests' max_tokens")
        if not self.rows:
            return
        for r in self.rows:  # each row's own chain, on its logits (batch index r.out); it accepts the token
            r.done = r.push(self.L.llama_sampler_sample(r.chain, self.ctx, r.out))
        keep = []
        for r in self.rows:
            reason = "cancelled" if r.ticket.cancelled else r.done
            if reason:
                r.ticket.finish(reason, r.n_new)
                self._free(r)
            else:
                keep.append(r)
        self.rows = keep

    def _without(self, fresh: list[_Row], running: int, rc: int) -> int:
        """A step with new prompts failed: fail those alone (503, retry) and decode the running rows again."""
        log.error("llama_decode returned %d admitting %d requests: they are refused, the others go on", rc, len(fresh))
        mem = self.L.llama_get_memory(self.ctx)
        for r in fresh:
            self.rows.remove(r)
            self._free(r)
            r.ticket.finish("error", 0, f"llama_decode returned {rc}: no room in the KV cache now, retry later",
                            status=503)
        for r in self.rows:  # drop whatever of this step llama.cpp kept, so positions stay consecutive
            self.L.llama_memory_seq_rm(mem, r.seq, len(r.ids) - 1, -1)
        if not self.rows:
            return 0
        self.batch.n_tokens = running  # the running rows' tokens are the batch's first entries
        return self.L.llama_decode(self.ctx, self.batch)

    def _release_all(self) -> None:
        for r in self.rows:
            self._free(r)

    def _free(self, row: _Row) -> None:
        self.L.llama_memory_seq_rm(self.L.llama_get_memory(self.ctx), row.seq, -1, -1)
        chain, row.chain = getattr(row, "chain", None), None
        if chain is not None:
            self.L.llama_sampler_free(chain)

    def stop(self) -> None:
        super().stop()
        if not any(t.is_alive() for t in self._threads):  # never free what a running step still uses
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
