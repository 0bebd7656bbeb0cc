"""Bounds on what an endpoint may send back: a whole-reply deadline and a byte cap, on the openai client's httpx.

httpx's timeouts are per read, so a server that trickles a byte a second, or streams keep-alives forever,
never times out. Each HTTP attempt here gets a deadline (``--request-timeout``) and a byte cap (derived from
the request's ``max_tokens``):

* a watchdog timer shuts the attempt's socket down at the deadline, which wakes a read blocked on it
  (connections are not kept alive, so the socket is always the one this attempt opened: httpcore's ``trace``
  extension hands it over when it connects);
* the response body is counted and checked against the deadline chunk by chunk, streamed or not.

Either bound raises :class:`ReplyBoundError`, an ``OpenAIError``: the openai client passes those on without
retrying (a server that trickled once would trickle again).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai

# A reply may hold this many bytes per requested token: SSE framing of one chunk per token is ~200-600 bytes
# (ids, model name, null fields, keep-alive comments), JSON escapes take up to 12 bytes per character.
BYTES_PER_TOKEN = 4096
BASE_BYTES = 64 * 1024  # the envelope of any reply (usage, ids, an error body)
MAX_REPLY_BYTES = 64 * 1024 * 1024  # whatever max_tokens says
NO_TOKENS_BYTES = 4 * 1024 * 1024  # requests without max_tokens (GET /v1/models)


def byte_cap(max_tokens: int | None) -> int:
    """The most bytes a reply to a request for ``max_tokens`` tokens may hold (see the constants)."""
    if not max_tokens or max_tokens < 1:
        return NO_TOKENS_BYTES
    return min(MAX_REPLY_BYTES, BASE_BYTES + BYTES_PER_TOKEN * int(max_tokens))


class ReplyBoundError(openai.OpenAIError):
    """A reply past its deadline or its byte cap; the message says which, and what to do."""


class _Attempt:
    """One HTTP attempt: its deadline, its socket (once connected) and the bytes read so far."""

    def __init__(self, seconds: float, cap: int) -> None:
        self.seconds, self.cap = seconds, cap
        self.deadline = time.monotonic() + seconds
        self.read = 0
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` extension: keep the socket of the connection (plain TCP, then TLS)."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with self._lock:
                self._sock = sock
                late = self.fired
            if late:  # connected after the deadline
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:  # wakes a recv() blocked in another thread; close() alone would not
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed: the attempt ended meanwhile
                pass

    def done(self) -> None:
        self._timer.cancel()

    def overdue(self) -> bool:
        return self.fired or time.monotonic() > self.deadline

    def error(self) -> ReplyBoundError:
        return ReplyBoundError(f"did not finish its reply within --request-timeout {self.seconds:g} s")

    def count(self, n: int) -> None:
        self.read += n
        if self.read > self.cap:
            raise ReplyBoundError(
                f"sent a reply over {self.cap} bytes (the cap for its max_tokens): is it "
                "streaming without end? Lower --max-new-tokens or check the server"
            )
        if self.overdue():
            raise self.error()


class _Bounded(httpx2.SyncByteStream):
    """The response body, counted and under the attempt's deadline."""

    def __init__(self, inner, attempt: _Attempt) -> None:
        self.inner, self.attempt = inner, attempt

    def __iter__(self):
        try:
            for chunk in self.inner:
                self.attempt.count(len(chunk))
                yield chunk
            if self.attempt.fired:  # a body that ends with the connection: the shutdown looks like its end
                raise self.attempt.error()
        except ReplyBoundError:
            raise
        except Exception:  # the watchdog's shutdown surfaces as a read error
            if self.attempt.overdue():
                raise self.attempt.error() from None
            raise

    def close(self) -> None:
        self.attempt.done()
        self.inner.close()


def _max_tokens(request: httpx2.Request) -> int | None:
    if request.method != "POST":
        return None
    try:
        body = json.loads(request.content or b"{}")
    except (ValueError, httpx2.RequestNotRead):
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("max_tokens") or body.get("max_completion_tokens")
    return value if isinstance(value, int) else None


class GuardedClient(openai.DefaultHttpxClient):
    """The openai client's httpx client with every attempt under a deadline and a byte cap (module docstring).
    ``send`` is httpx's public hook for every request, proxied or not."""

    def __init__(self, reply_seconds: float, **kw) -> None:
        # No keep-alive: each attempt opens its own connection, so the watchdog knows which socket is its own.
        kw.setdefault("limits", httpx2.Limits(max_connections=1000, max_keepalive_connections=0))
        super().__init__(**kw)
        self.reply_seconds = reply_seconds

    def send(self, request: httpx2.Request, *, stream: bool = False, **kw):  # type: ignore[override]
        attempt = _Attempt(self.reply_seconds, byte_cap(_max_tokens(request)))
        request.extensions = {**request.extensions, "trace": _chain(request.extensions.get("trace"), attempt.trace)}
        try:
            response = super().send(request, stream=True, **kw)
        except ReplyBoundError:
            attempt.done()
            raise
        except Exception:
            attempt.done()
            if attempt.overdue():  # the watchdog cut the headers short
                raise attempt.error() from None
            raise
        response.stream = _Bounded(response.stream, attempt)
        if not stream:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response


def _chain(first: Callable | None, second: Callable) -> Callable:
    if first is None:
        return second

    def both(event: str, info: dict[str, Any]) -> None:
        first(event, info)
        second(event, info)

    return both
