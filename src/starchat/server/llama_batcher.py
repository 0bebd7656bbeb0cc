"""Parallel slots on llama.cpp: many sequences in one llama.cpp context, decoded together.

Like llama.cpp's own server (`-np`): each request gets a sequence id (a slot) in a context whose KV
cache is shared by all slots. Every step sends one `llama_batch` holding the next token of each running
sequence plus the prompts of newly admitted ones, so all slots share each pass over the weights. Rows
are sampled each by its own llama.cpp sampler chain, built like the chat's (`inference.llamacpp.sampler_chain`),
so a seed gives the same text in `chat`, `serve` and `eval` for a request decoded alone (beside others,
llama.cpp's logits depend on what else the KV cache holds); rows finish through the same text/stop logic as the
transformers batcher.

Prompt cache (as llama-server's ``cache_prompt``): a finished or cancelled sequence keeps its KV cells, and a
new request whose prompt starts with the same tokens (the next turn of a chat resends the whole conversation;
many requests share a system prompt) shares them (``llama_memory_seq_cp`` tags the cells with its sequence id
too, nothing is copied) and prefills only the rest. At most as many sequences as slots hold cells (`_place`
says why and which one goes); finished sequences' cells also go, oldest first, when running requests need
them. Not covered: a prefix whose cells were evicted is computed again, and a prompt is always decoded from
its last token at least (its logits are not kept).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from starchat.inference.llamacpp import sampler_chain
from starchat.quiet import llama_log_filter
from starchat.server.batcher import _Row, _size, admit_rows
from starchat.server.scheduler import BatchingScheduler, Ticket
from starchat.templates import common_prefix

log = logging.getLogger("starchat.server")


class LlamaCppBatcher(BatchingScheduler):
    kind = "llama.cpp-slots"

    def __init__(self, engine, slots: int = 16, max_queue: int = 64, kv_tokens: int = 16384, prompt_cache: bool = True):
        """``engine``: a starchat LlamaCppEngine (its weights are shared, the context is our own);
        ``kv_tokens``: KV cells shared by all slots, at least one full context; ``prompt_cache``: keep finished
        sequences' cells for requests that start with the same tokens."""
        import llama_cpp as L

        super().__init__(slots, max_queue)
        self.L, self.engine = L, engine
        self.eos_ids = set(engine.eos_token_ids)
        cp = L.llama_context_default_params()
        cp.n_ctx = max(engine.context_length, min(slots * engine.context_length, kv_tokens))
        cp.n_batch = cp.n_ctx  # a whole prompt fits in one call; llama.cpp splits it into micro-batches
        cp.n_ubatch = 512
        cp.n_seq_max = min(slots, L.llama_max_parallel_sequences())  # the cached ones included (`_place`)
        cp.kv_unified = True  # one pool of cells: short chats leave room for long ones
        cp.n_threads = cp.n_threads_batch = engine.n_threads  # starchat.threads' choice, or --threads
        cp.flash_attn_type = engine.llm.context_params.flash_attn_type  # the chat's attention: the same logits
        # n_ctx_seq here is the pool all slots share; the server refuses any request past the model's own
        # context (engine.context_length), so llama.cpp's "n_ctx_seq > n_ctx_train" warning means nothing.
        with llama_log_filter(r"n_ctx_seq \(\d+\) > n_ctx_train \(\d+\)"):
            self.ctx = L.llama_init_from_model(engine.llm.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the serving context (out of memory?)")
        self.n_ctx = cp.n_ctx
        self.n_batch = cp.n_batch  # tokens the llama_batch buffer holds
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(engine.llm.model))
        self.penalty_last_n = engine.llm.last_n_tokens_size  # the chat's repetition-penalty window
        self.batch = L.llama_batch_init(cp.n_batch, 0, 1)
        self.n_seq = cp.n_seq_max
        self.prompt_cache = prompt_cache
        self.cached: OrderedDict[int, list[int]] = OrderedDict()  # seq id -> tokens in its cells, oldest first
        self.reused_tokens = 0  # prompt tokens taken from the cache instead of prefilled

    def stats(self) -> dict:
        return {
            **super().stats(),
            "kv_tokens": self.n_ctx,
            "kv_reserved": sum(_size(r.ticket) for r in list(self.rows)),
            "prompt_cache": {"sequences": len(self.cached), "reused_tokens": self.reused_tokens},
        }

    def refusal(self, prompt_len: int, max_new_tokens: int) -> str | None:
        if prompt_len + max_new_tokens > min(self.n_ctx, self.n_batch):
            return (
                f"the prompt ({prompt_len} tokens) plus max_tokens={max_new_tokens} is more than the "
                f"{self.n_ctx}-cell KV cache of this server (--kv-tokens): shorten it or lower max_tokens"
            )
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
        r.seq, r.kv = self._place(t.prompt_ids, t.editor)
        self.rows.append(r)
        return r

    def _place(self, prompt: list[int], editor: bool = False) -> tuple[int, int]:
        """A sequence id for a new prompt, and how many of its first tokens it already holds in the KV cache.

        The longest common prefix with a cached or running sequence is shared (at most all but the last
        prompt token: its logits are needed). At most as many sequences as slots hold cells, running or
        cached, as llama-server's slots each keep one prompt: every cached cell stays in the range each later
        step's attention walks (measured: decode 10% slower with one unrelated cached sequence beside the
        request). So a cached source is taken over (its id, its cells up to the shared prefix; the rest is
        what the user typed over or an old reply) when the new prompt continues most of it, comes from an
        editor (``editor``: the next keystroke's request supersedes the last, whatever the suffix's length),
        or no sequence is free; otherwise a free id shares the prefix; with none free, the oldest cached
        sequence goes. Not covered: two editors whose files share a long prefix take each other's over.
        """
        mem = self.L.llama_get_memory(self.ctx)
        src, lcp = -1, 0
        if self.prompt_cache:  # a running row's cells hold its first r.kv tokens
            shared = [(seq, common_prefix(toks, prompt)) for seq, toks in self.cached.items()]
            shared += [(r.seq, min(r.kv, common_prefix(r.ids, prompt))) for r in self.rows]
            src, lcp = max(shared, key=lambda s: s[1], default=(-1, 0))
        lcp = max(0, min(lcp, len(prompt) - 1))
        held = {r.seq for r in self.rows} | set(self.cached)
        full = len(held) >= min(self.capacity, self.n_seq)
        if lcp > 0 and src in self.cached and (full or editor or 2 * lcp >= len(self.cached[src])):
            del self.cached[src]
            self.L.llama_memory_seq_rm(mem, src, lcp, -1)
            self.reused_tokens += lcp
            return src, lcp
        if full and self.cached:
            old, _ = self.cached.popitem(last=False)
            self.L.llama_memory_seq_rm(mem, old, -1, -1)
            held.discard(old)
        seq = next(s for s in range(self.n_seq) if s not in held)  # derived, never a list a failure could leak
        if lcp > 0:  # cells are shared, not copied
            self.L.llama_memory_seq_cp(mem, src, seq, 0, lcp)
            self.reused_tokens += lcp
            if src in self.cached:
                self.cached.move_to_end(src)  # recently useful: evicted last
        return seq, lcp

    def _make_room(self) -> None:
        """Drop cached sequences, oldest first, until they and every running request's reservation fit the
        cells (shared cells are counted twice: the decode never runs out)."""
        reserved = sum(_size(r.ticket) for r in self.rows)
        cached = sum(len(t) for t in self.cached.values())
        mem = self.L.llama_get_memory(self.ctx)
        while self.cached and reserved + cached > self.n_ctx:
            seq, toks = self.cached.popitem(last=False)
            self.L.llama_memory_seq_rm(mem, seq, -1, -1)
            cached -= len(toks)

    def _step(self, new: list[Ticket]) -> None:
        b, n = self.batch, 0

        def add(tok: int, pos: int, seq: int, want_logits: bool) -> int:
            nonlocal n
            b.token[n], b.pos[n], b.n_seq_id[n], b.seq_id[n][0], b.logits[n] = tok, pos, 1, seq, want_logits
            n += 1
            return n - 1

        old = list(self.rows)
        for r in old:  # the next token of every running sequence
            r.out = add(r.ids[-1], len(r.ids) - 1, r.seq, True)
        running = n
        fresh = admit_rows(new, self._new_row)  # may share running rows' cells: those before this step's token
        for r in old:
            r.kv = len(r.ids)
        if fresh:  # only new rows add reservations
            self._make_room()
        for r in fresh:  # the prompts, after what they share with the cache
            prompt = r.ticket.prompt_ids
            for pos in range(r.kv, len(prompt)):
                r.out = add(prompt[pos], pos, r.seq, pos == len(prompt) - 1)
            r.kv = len(prompt)
        b.n_tokens = n
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0 and fresh:
            rc = self._without(fresh, running, rc)
        if rc != 0:
            raise RuntimeError(
                f"llama_decode returned {rc}: the {self.n_ctx}-token KV cache shared by the slots "
                "is full; raise --kv-tokens, or lower --max-batch or the requests' max_tokens"
            )
        if not self.rows:
            return
        for r in self.rows:  # each row's own chain, on its logits (batch index r.out); it accepts the token
            r.done = r.push(self.L.llama_sampler_sample(r.chain, self.ctx, r.out))
        keep, done = [], []
        for r in self.rows:
            reason = "cancelled" if r.ticket.cancelled else r.done
            if reason:
                done.append((r, reason))
            else:
                keep.append(r)
        self.rows = keep
        for r, reason in done:  # after they left the rows: `running` never counts a request seen finished
            self._free(r, keep=self.prompt_cache)  # cached before the client is told: stats agree once it knows
            r.ticket.finish(reason, r.n_new)

    def _without(self, fresh: list[_Row], running: int, rc: int) -> int:
        """A step with new prompts failed: fail those alone (503, retry) and decode the running rows again."""
        log.error("llama_decode returned %d admitting %d requests: they are refused, the others go on", rc, len(fresh))
        mem = self.L.llama_get_memory(self.ctx)
        for r in fresh:
            self.rows.remove(r)
            self._free(r)
            r.ticket.finish(
                "error", 0, f"llama_decode returned {rc}: no room in the KV cache now, retry later", status=503
            )
        for r in self.rows:  # drop whatever of this step llama.cpp kept, so positions stay consecutive
            self.L.llama_memory_seq_rm(mem, r.seq, len(r.ids) - 1, -1)
            r.kv = len(r.ids)  # the batch decodes each row's last token again
        if not self.rows:
            return 0
        self.batch.n_tokens = running  # the running rows' tokens are the batch's first entries
        return self.L.llama_decode(self.ctx, self.batch)

    def _release_all(self) -> None:
        for r in self.rows:
            self._free(r)
        mem = self.L.llama_get_memory(self.ctx)
        while self.cached:
            self.L.llama_memory_seq_rm(mem, self.cached.popitem()[0], -1, -1)

    def _free(self, row: _Row, keep: bool = False) -> None:
        """Give back a row's sampler and its sequence id; ``keep``: its cells stay, for the prompt cache."""
        if keep:
            self.cached[row.seq] = row.ids[: row.kv]
        else:
            self.L.llama_memory_seq_rm(self.L.llama_get_memory(self.ctx), row.seq, -1, -1)
        chain, row.chain = getattr(row, "chain", None), None
        if chain is not None:
            self.L.llama_sampler_free(chain)

    def stop(self) -> None:
        super().stop()
        if not any(t.is_alive() for t in self._threads):  # never free what a running step still uses
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)


def from_settings(engine, settings) -> LlamaCppBatcher:
    """The llama.cpp backend's scheduler (named in `starchat.inference.backends`)."""
    return LlamaCppBatcher(engine, slots=settings.max_batch, max_queue=settings.max_queue, kv_tokens=settings.kv_tokens)
