"""Request scheduling: tickets, the bounded queue, the scheduler base, and one-at-a-time engine slots.

A ticket is one generation. The HTTP side awaits its text deltas on the event loop; generation runs on
worker threads. The queue is bounded: `submit` raises `QueueFull` and the app answers 503. Cancelling a
ticket (client gone) frees its slot at the next token. The batching schedulers (`batcher.py` for
transformers, `llama_batcher.py` for llama.cpp, `vllm_scheduler.py`) build on `QueueScheduler`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("starchat.server")


class QueueFull(RuntimeError):
    """Every slot is busy and the waiting queue is at its bound."""


@dataclass
class Result:
    finish_reason: str = "stop"  # "stop" | "length" | "cancelled" | "error"
    completion_tokens: int = 0
    error: str | None = None  # for the server log; shown to the client only when `status` is below 500
    status: int = 500  # the HTTP status of an error: 4xx when the request itself is at fault


class Ticket:
    """One generation: its prompt and parameters in, its text deltas and result out (to asyncio).

    Workers append text under a lock and wake the event loop at most once until it has read: with
    16 rows a step, one wake-up per token per row kept the loop (and the GIL) needlessly busy, and a
    client that falls behind gets the text it missed in one chunk instead of a backlog.
    """

    def __init__(
        self, prompt_ids: list[int], params, loop: asyncio.AbstractEventLoop | None = None, editor: bool = False
    ):
        self.prompt_ids = list(prompt_ids)
        self.params = params
        # An editor's completion (/infill, /completion, suffix): each keystroke's request supersedes the last,
        # so the prompt cache keeps only what the two share (LlamaCppBatcher._place).
        self.editor = editor
        self.cancel_event = threading.Event()
        self.result = Result()
        self.submitted = time.perf_counter()
        self._loop = loop or asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._done = False
        self._wake_pending = False

    # -- worker side (any thread) --
    def put(self, text: str) -> None:
        if text:
            self._push(text, done=False)

    def finish(self, finish_reason: str, completion_tokens: int, error: str | None = None, status: int = 500) -> None:
        self.result = Result(finish_reason, completion_tokens, error, status)
        self._push("", done=True)

    def _push(self, text: str, done: bool) -> None:
        with self._lock:
            if text:
                self._pieces.append(text)
            self._done = self._done or done
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._loop.call_soon_threadsafe(self._ready.set)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    # -- asyncio side --
    def cancel(self) -> None:
        self.cancel_event.set()

    async def deltas(self):
        """Yield text deltas until the generation ends; `self.result` is then final."""
        while True:
            await self._ready.wait()
            with self._lock:
                self._ready.clear()
                self._wake_pending = False
                text, done = "".join(self._pieces), self._done
                self._pieces.clear()
            if text:
                yield text
            if done:
                return

    async def text(self) -> str:
        return "".join([d async for d in self.deltas()])


@dataclass
class PendingQueue:
    """Tickets waiting for a slot, bounded by `max_queue`; cancelled ones are dropped when popped."""

    max_queue: int
    _items: collections.deque = field(default_factory=collections.deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False

    def push(self, ticket: Ticket) -> None:
        with self._cond:
            self._drop_cancelled()
            if len(self._items) >= self.max_queue:
                raise QueueFull(f"{len(self._items)} requests already waiting")
            self._items.append(ticket)
            self._cond.notify()

    def pop(self, timeout: float | None = None) -> Ticket | None:
        """The next live ticket; waits up to `timeout` (None: until one comes or the queue closes)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                while self._items:
                    t = self._items.popleft()
                    if t.cancelled:
                        t.finish("cancelled", 0)
                        continue
                    return t
                if self.closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def take(self, room: int, block: bool, fits=None) -> list[Ticket] | None:
        """Up to ``room`` live tickets; with ``block``, waits for the first. None once the queue is closed.

        ``fits(ticket, taken)``: True to take it, False to leave it first in line (it waits: nothing
        behind it jumps ahead), None when it was refused (``fits`` finished it) and the next is looked at.
        """
        out: list[Ticket] = []
        t = self.pop(timeout=None if block else 0) if room > 0 else None
        if t is None:
            return None if (room > 0 and block and self.closed) else out
        while t is not None:
            ok = True if fits is None else fits(t, out)
            if ok is False:
                with self._cond:
                    if self.closed:  # close() ran meanwhile: nobody will take it again
                        t.finish("cancelled", 0, "server shutting down")
                    else:
                        self._items.appendleft(t)  # already counted against max_queue when it came
                break
            if ok:
                out.append(t)
            if len(out) >= room:
                break
            t = self.pop(timeout=0)
        return out

    def close(self) -> None:
        with self._cond:
            self.closed = True
            for t in self._items:
                t.finish("cancelled", 0, "server shutting down")
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)

    def _drop_cancelled(self) -> None:
        live = [t for t in self._items if not t.cancelled]
        for t in self._items:
            if t.cancelled:
                t.finish("cancelled", 0)
        self._items = collections.deque(live)


class QueueScheduler:
    """What every scheduler shares: the bounded queue, worker threads, submit/stop and stats."""

    kind = "base"

    def __init__(self, capacity: int, max_queue: int):
        self.capacity = capacity  # requests that can run at once
        self.pending = PendingQueue(max_queue)
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> int:
        raise NotImplementedError

    def submit(self, ticket: Ticket) -> Ticket:
        self.pending.push(ticket)
        return ticket

    def refusal(self, prompt_len: int, max_new_tokens: int) -> str | None:
        """Why a request of this size can never run here (None: it can, maybe after waiting its turn)."""
        return None

    def stats(self) -> dict:
        return {
            "scheduler": self.kind,
            "slots": self.capacity,
            "running": self.running,
            "queued": len(self.pending),
            "max_queue": self.pending.max_queue,
        }

    def _spawn(self, target, name: str, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self.pending.close()
        for t in self._threads:
            t.join(timeout=30)


class BatchingScheduler(QueueScheduler):
    """A scheduler whose one thread runs steps over many requests (``self.rows``) at once.

    Between steps it admits waiting tickets up to the capacity; a failed step fails the requests
    that were in it and serving goes on. Subclasses implement ``_step`` and ``_release_all``.
    """

    def __init__(self, capacity: int, max_queue: int):
        super().__init__(capacity, max_queue)
        self.rows: list = []  # or a dict keyed by the backend's request id

    @property
    def running(self) -> int:
        return len(self.rows)

    def start(self) -> None:
        self._spawn(self._loop, f"starchat-{self.kind}")

    def _step(self, new: list[Ticket]) -> None:
        raise NotImplementedError

    def _release_all(self) -> None:
        """Free the backend's state for every row (KV cache, sequence ids, requests)."""

    def _fits(self, ticket: Ticket, taken: list[Ticket]) -> bool | None:
        """Admission (see `PendingQueue.take`): may ``ticket`` join the running rows and ``taken`` now?"""
        return True

    def _refuse_or_wait(self, ticket: Ticket, taken: list[Ticket]) -> bool | None:
        """For a ticket that does not fit now: it waits for running rows to end, unless nothing runs
        (then it never will fit), and it is failed alone with a 400."""
        if self.rows or taken:
            return False
        n = len(ticket.prompt_ids)
        ticket.finish(
            "error",
            0,
            self.refusal(n, ticket.params.max_new_tokens)
            or f"a request of {n} prompt tokens + max_tokens={ticket.params.max_new_tokens} "
            "does not fit this server's KV cache: shorten it or lower max_tokens",
            status=400,
        )
        return None

    def _loop(self) -> None:
        while True:
            new = self.pending.take(self.capacity - len(self.rows), block=not self.rows, fits=self._fits)
            if new is None:  # the queue was closed: the server is stopping
                self._end_all("cancelled", "server shutting down")
                return
            if not new and not self.rows:  # every ticket taken was refused or cancelled
                continue
            try:
                self._step(new)
            except Exception as e:  # fail the requests in this step, keep serving
                log.exception("%s step failed", self.kind)
                self._end_all("error", f"{type(e).__name__}: {e}")

    def _end_all(self, reason: str, why: str) -> None:
        rows = self.rows.values() if isinstance(self.rows, dict) else self.rows
        for r in rows:
            r.ticket.finish(reason, r.n_new, why)
        try:
            self._release_all()
        except Exception:  # the backend itself may be what failed
            log.exception("%s: releasing state failed", self.kind)
        self.rows = type(self.rows)()


class SlotScheduler(QueueScheduler):
    """N slots, each a thread running one request at a time on its own engine (any starchat Engine)."""

    kind = "slots"

    def __init__(self, engines: list, max_queue: int = 64):
        if not engines:
            raise ValueError("SlotScheduler needs at least one engine")
        super().__init__(len(engines), max_queue)
        self.engines = engines
        self._running = 0
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        return self._running

    def start(self) -> None:
        for i, eng in enumerate(self.engines):
            self._spawn(self._worker, f"starchat-slot-{i}", eng)

    def _worker(self, engine) -> None:
        while True:
            ticket = self.pending.pop()
            if ticket is None:
                return
            with self._lock:
                self._running += 1
            try:
                run_on_engine(engine, ticket)
            except Exception as e:  # one bad request must not kill the slot
                log.exception("generation failed")
                ticket.finish("error", 0, f"{type(e).__name__}: {e}")
            finally:
                with self._lock:
                    self._running -= 1


def run_on_engine(engine, ticket: Ticket) -> None:
    """Stream one ticket through `engine.stream` (cancellable), then report how it ended."""
    gen = engine.stream(ticket.prompt_ids, ticket.params, cancel=ticket.cancel_event)
    for delta in gen:
        ticket.put(delta)
    done = gen.completion  # a starchat Generation holds its Completion once iterated
    ticket.finish("cancelled" if ticket.cancelled else done.finish_reason, done.completion_tokens)


def one_at_a_time(engine, settings) -> SlotScheduler:
    """The scheduler of a backend that batches nothing, and of any engine not in the backend registry."""
    return SlotScheduler([engine], max_queue=settings.max_queue)
