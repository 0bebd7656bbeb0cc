"""Step-level continuous batching for the transformers backend: many requests share every forward pass.

One thread owns the model. Between decode steps it admits waiting tickets (prefilled together, their KV
cache left-padded and concatenated onto the running batch), drops finished or cancelled rows, and samples
every row with its own parameters in one batched call (`sampler.py`), each with its own seeded generator.
"""

from __future__ import annotations

import logging

import torch
from transformers import DynamicCache

from starchat.inference.textstream import TextAssembler
from starchat.server.sampler import sample_rows
from starchat.server.scheduler import BatchingScheduler, Ticket

log = logging.getLogger("starchat.server")


class _Row:
    """One running request: its tokens, sampler and text stream."""

    def __init__(self, ticket: Ticket, decode, eos_ids: set[int], device: torch.device):
        p = ticket.params
        self.ticket = ticket
        self.ids = list(ticket.prompt_ids)
        self.max_new = p.max_new_tokens
        self.n_new = 0
        self.seq = self.out = -1  # llama.cpp: the row's sequence id, and its logits' index in the batch
        self.kv = 0  # llama.cpp: how many of its first tokens (ids) its KV cells hold
        self.done: str | None = None  # finish reason once the row has ended
        self.eos_ids = eos_ids | set(p.stop_token_ids) if p.stop_token_ids else eos_ids
        self.text = TextAssembler(decode, p.stop, prompt_tail=ticket.prompt_ids)
        self.gen = None  # unseeded rows draw from torch's global generator, all in one call
        if p.seed is not None:
            self.gen = torch.Generator(device=device)
            self.gen.manual_seed(p.seed)

    def push(self, token: int) -> str | None:
        """Take one sampled token; returns the finish reason when the row is done, else None."""
        self.n_new += 1  # counted like the engine's Completion: the end token included
        if token in self.eos_ids:
            self.ticket.put(self.text.finish())
            return "stop"
        self.ids.append(token)
        self.ticket.put(self.text.feed(token))
        if self.text.stopped:
            return "stop"
        if self.n_new >= self.max_new:
            self.ticket.put(self.text.finish())
            return "length"
        return None


class ContinuousBatcher(BatchingScheduler):
    """Serves tickets from a bounded queue through one HF causal LM, up to `max_batch` rows at a time."""

    kind = "continuous-batching"

    def __init__(self, engine, max_batch: int = 16, max_queue: int = 64, kv_tokens: int = 16384):
        """``engine``: a TransformersEngine (its ``model``, ``decode``, ``eos_token_ids``, ``pad_token_id``);
        ``kv_tokens``: the KV cache positions the batch may hold (rows x its longest row, padding included)."""
        super().__init__(max_batch, max_queue)
        self.kv_tokens = kv_tokens
        self.engine = engine
        self.model = engine.model.eval()
        self.device = engine.model.device
        self.eos_ids = set(int(i) for i in engine.eos_token_ids)
        self.cache, self.mask = None, None  # the running rows' KV cache and attention mask
        self.pad_id = engine.pad_token_id
        self.steps = 0
        self.peak_rows = 0  # the most rows that ever shared a forward pass

    def stats(self) -> dict:
        return {**super().stats(), "peak_batch": self.peak_rows}

    def refusal(self, prompt_len: int, max_new_tokens: int) -> str | None:
        if prompt_len + max_new_tokens > self.kv_tokens:
            return (
                f"the prompt ({prompt_len} tokens) plus max_tokens={max_new_tokens} is more than the "
                f"{self.kv_tokens} KV cache positions of this server (--kv-tokens): shorten it or lower max_tokens"
            )
        return None

    def _fits(self, ticket: Ticket, taken: list[Ticket]) -> bool | None:
        """Rows are right-aligned in one left-padded cache, so it holds (rows x the longest row) positions;
        each row is counted at its full size (prompt + max_new_tokens) so no decode step can overflow."""
        sizes = [_size(r.ticket) for r in self.rows] + [_size(t) for t in taken] + [_size(ticket)]
        if len(sizes) * max(sizes) <= self.kv_tokens:
            return True
        return self._refuse_or_wait(ticket, taken)

    def _step(self, new: list[Ticket]) -> None:
        with torch.inference_mode():
            if new:
                self._prefill(new)
            elif self.rows:
                self._decode()
            self._retire()

    def _release_all(self) -> None:
        self.cache, self.mask = None, None

    def _prefill(self, tickets: list[Ticket]) -> None:
        """Run the new prompts as one left-padded batch, sample their first token, merge into the batch.

        A failure here (out of memory, a bad request) fails the new requests alone: the running batch's
        cache is only touched by the merge at the end."""
        rows = admit_rows(tickets, lambda t: _Row(t, self.engine.decode, self.eos_ids, self.device))
        if not rows:
            return
        try:
            self._prefill_rows(rows)
        except Exception as e:
            fail_new(rows, e)

    def _prefill_rows(self, rows: list[_Row]) -> None:
        longest = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, longest - len(r.ids) :] = torch.tensor(r.ids)
            new_mask[i, longest - len(r.ids) :] = 1
        pos = (new_mask.cumsum(-1) - 1).clamp(min=0)
        ids, new_mask, pos = ids.to(self.device), new_mask.to(self.device), pos.to(self.device)
        new_cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=new_mask,
            position_ids=pos,
            past_key_values=new_cache,
            use_cache=True,
            logits_to_keep=1,
        )
        first = _sample(rows, out.logits[:, -1, :])
        self.cache, self.mask = _merge(self.cache, self.mask, out.past_key_values, new_mask)
        self.rows.extend(rows)
        self.peak_rows = max(self.peak_rows, len(self.rows))
        for r, tok in zip(rows, first):
            r.done = r.push(tok)

    def _decode(self) -> None:
        """One token for every running row."""
        last = torch.tensor([[r.ids[-1]] for r in self.rows], dtype=torch.long, device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        pos = self.mask.sum(-1, keepdim=True) - 1
        out = self.model(
            input_ids=last,
            attention_mask=self.mask,
            position_ids=pos,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        for r, tok in zip(self.rows, _sample(self.rows, logits)):
            r.done = r.push(tok)
        self.steps += 1

    def _retire(self) -> None:
        """Finish rows that are done or cancelled, then shrink the cache to the rows left."""
        keep, done = [], []
        for i, r in enumerate(self.rows):
            reason = "cancelled" if r.ticket.cancelled else r.done
            if reason:
                done.append((r, reason))
            else:
                keep.append(i)
        if not done:
            return
        self.rows = [self.rows[i] for i in keep]
        for r, reason in done:  # after they left the rows: `running` never counts a request seen finished
            r.ticket.finish(reason, r.n_new)
        if not keep:
            self.cache, self.mask = None, None
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(idx)
        mask = self.mask[idx]
        # Columns that are padding in every remaining row cost attention time for nothing: drop them.
        lead = int((mask.sum(0) == 0).long().cumprod(0).sum())
        if lead:
            for layer in self.cache.layers:
                layer.keys = layer.keys[..., lead:, :]
                layer.values = layer.values[..., lead:, :]
            mask = mask[:, lead:]
        self.mask = mask


def _size(ticket: Ticket) -> int:
    """The KV cache positions a request may come to hold."""
    return len(ticket.prompt_ids) + ticket.params.max_new_tokens


def admit_rows(tickets: list[Ticket], make) -> list:
    """``make(ticket)`` for each ticket; one that raises is failed alone, the others go on."""
    rows = []
    for t in tickets:
        try:
            rows.append(make(t))
        except Exception as e:
            log.exception("admitting a request failed")
            t.finish("error", 0, f"{type(e).__name__}: {e}")
    return rows


def fail_new(rows: list, e: Exception) -> None:
    """Fail the requests of a prefill that raised; the rows already running are not touched."""
    log.exception("prefill of %d new requests failed", len(rows))
    for r in rows:
        r.ticket.finish("error", r.n_new, f"{type(e).__name__}: {e}")


def _sample(rows: list[_Row], logits: torch.Tensor) -> list[int]:
    ps = [r.ticket.params for r in rows]
    return sample_rows(
        logits,
        [r.ids for r in rows],
        [p.temperature for p in ps],
        [p.top_k for p in ps],
        [p.top_p for p in ps],
        [p.repetition_penalty for p in ps],
        [r.gen for r in rows],
    )


def _merge(cache, mask, new_cache, new_mask):
    """Concatenate two left-padded batches (KV cache + attention mask) along the batch axis."""
    if cache is None:
        return new_cache, new_mask
    old_len, new_len = mask.shape[1], new_mask.shape[1]
    width = max(old_len, new_len)
    for layer, new_layer in zip(cache.layers, new_cache.layers):
        layer.keys = torch.cat([_left_pad(layer.keys, width), _left_pad(new_layer.keys, width)], dim=0)
        layer.values = torch.cat([_left_pad(layer.values, width), _left_pad(new_layer.values, width)], dim=0)
    mask = torch.cat([_left_pad(mask, width, dim=1), _left_pad(new_mask, width, dim=1)], dim=0)
    return cache, mask


def _left_pad(t: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    extra = width - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def from_settings(engine, settings) -> ContinuousBatcher:
    """The transformers backend's scheduler (named in `starchat.inference.backends`)."""
    return ContinuousBatcher(
        engine, max_batch=settings.max_batch, max_queue=settings.max_queue, kv_tokens=settings.kv_tokens
    )
