"""Parallel slots on llama.cpp: many sequences in one llama.cpp context, decoded together.

Like llama.cpp's own server (`-np`): each request gets a sequence id (a slot) in a context whose KV
cache is shared by all slots. Every step sends one `llama_batch` holding the next token of each running
sequence plus the prompts of newly admitted ones, so all slots share each pass over the weights. Rows
are sampled with the batched sampler and finished through the same text/stop logic as the transformers
batcher; a finished or cancelled sequence has its KV cells removed and its slot reused.
"""

from __future__ import annotations

import numpy as np
import torch

from starchat.server.batcher import _Row, _sample
from starchat.server.scheduler import BatchingScheduler, Ticket

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
        self.ctx = L.llama_init_from_model(engine.llm._model.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the serving context (out of memory?)")
        self.n_ctx = cp.n_ctx
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(engine.llm._model.model))
        self.batch = L.llama_batch_init(cp.n_batch, 0, 1)
        self.free_seqs = list(range(slots))

    def _step(self, new: list[Ticket]) -> None:
        b, n = self.batch, 0

        def add(tok: int, pos: int, seq: int, want_logits: bool) -> int:
            nonlocal n
            b.token[n], b.pos[n], b.n_seq_id[n], b.seq_id[n][0], b.logits[n] = tok, pos, 1, seq, want_logits
            n += 1
            return n - 1

        for r in self.rows:  # the next token of every running sequence
            r.out = add(r.ids[-1], len(r.ids) - 1, r.seq, True)
        for t in new:
            r = _Row(t, self.engine.decode, self.eos_ids, "cpu")
            r.seq = self.free_seqs.pop()
            for pos, tok in enumerate(t.prompt_ids):
                r.out = add(tok, pos, r.seq, pos == len(t.prompt_ids) - 1)
            self.rows.append(r)
        b.n_tokens = n
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}: the {self.n_ctx}-token KV cache shared by the slots "
                               "is full; raise --kv-tokens, or lower --max-batch or the requests' max_tokens")
        logits = torch.from_numpy(np.stack([
            np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, r.out), shape=(self.n_vocab,))
            for r in self.rows]))
        for r, tok in zip(self.rows, _sample(self.rows, logits)):
            r.done = r.push(tok)
        keep = []
        for r in self.rows:
            reason = "cancelled" if r.ticket.cancelled else r.done
            if reason:
                r.ticket.finish(reason, r.n_new)
                self._free(r)
            else:
                keep.append(r)
        self.rows = keep

    def _release_all(self) -> None:
        for r in self.rows:
            self._free(r)

    def _free(self, row: _Row) -> None:
        self.L.llama_memory_seq_rm(self.L.llama_get_memory(self.ctx), row.seq, -1, -1)
        self.free_seqs.append(row.seq)

    def stop(self) -> None:
        super().stop()
        if not any(t.is_alive() for t in self._threads):  # never free what a running step still uses
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
