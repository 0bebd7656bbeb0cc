"""Runs `/v1/review` in a process of its own, with a bounded queue and a deadline per review.

Why a process: the review (code-block parsing, bandit) is pure Python. On the event loop's default
thread pool it held the GIL that generation needs and took the threads that prompt encoding
(``asyncio.to_thread``) waits for: six reviews of ~9,000 blocks made a neighbour's 8-token chat take
41-45 s instead of 0.1-0.3 s. Here one worker process (spawned, not forked: the server runs torch's
threads) reviews one reply at a time; the server's threads only wait on a future.

Bounds: each review checks at most ``starchat.review.MAX_REVIEW_CHARS`` characters and
``MAX_CODE_BLOCKS`` blocks; at most ``max_pending`` reviews are queued or running (more are answered
503 with Retry-After); a review that takes longer than ``timeout_s`` (its wait in the queue included)
is answered 503, and the worker is killed and started afresh, failing the reviews queued behind it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

MAX_PENDING = 4  # reviews queued or running at once
TIMEOUT_S = 60.0  # per review, its wait in the queue included


class ReviewBusy(Exception):
    """The review could not be done now; ``str(e)`` says why and what to do."""


def _review_plain(text: str, finish_reason: str | None) -> list[dict]:
    """In the worker: the findings as plain data (a Finding's fields plus its one-line text)."""
    from starchat.review import review

    return [{**vars(f), "text": str(f)} for f in review(text, finish_reason=finish_reason)]


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `starchat serve` stops the server, which stops us


class ReviewRunner:
    """The review worker process, started on the first review and stopped with the server."""

    def __init__(self, max_pending: int = MAX_PENDING, timeout_s: float = TIMEOUT_S):
        self.max_pending, self.timeout_s = max_pending, timeout_s
        self.pending = 0  # only touched on the event loop's thread
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
                )
            return self._pool

    def _restart(self, pool: ProcessPoolExecutor) -> None:
        """Kill a stuck or broken worker; the next review starts a fresh one."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        # ProcessPoolExecutor has no way to cancel a running task: kill its process (private attribute,
        # read defensively; a dead worker breaks the pool, which shutdown then clears).
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def review(self, text: str, finish_reason: str | None) -> list[dict]:
        if self.pending >= self.max_pending:
            raise ReviewBusy(
                f"{self.pending} reviews are already queued or running (limit {self.max_pending}); retry later"
            )
        self.pending += 1
        pool = self._executor()
        try:
            fut = pool.submit(_review_plain, text, finish_reason)
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.timeout_s)
        except TimeoutError:
            self._restart(pool)
            raise ReviewBusy(
                f"the review took longer than {self.timeout_s:g} s (queue included); send a shorter text or retry later"
            ) from None
        except BrokenProcessPool:
            self._restart(pool)
            raise ReviewBusy("the review worker stopped (killed or out of memory); retry") from None
        finally:
            self.pending -= 1

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()  # a review in flight is of no use once the server stops
            pool.shutdown(wait=True, cancel_futures=True)
