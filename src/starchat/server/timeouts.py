"""Connection deadlines: a slow or idle client cannot hold a connection (and its memory) indefinitely.

Three bounds, each for one phase of a request:
- headers: `HeaderDeadline`, uvicorn's h11 protocol plus a timer from the connection's start (and from
  the end of each response) until the request line and headers are all in; then the connection is closed.
  uvicorn's own `timeout_keep_alive` only covers a connection that sends nothing at all between requests,
  and is reset by every byte, so a client trickling one header byte a second was never dropped.
- body: `BodyDeadline`, ASGI middleware: the whole body must arrive within N seconds of the headers, or the
  answer is 408 and the connection closes.
- size: h11's `max_incomplete_event_size` caps the headers (16 KB); `BodyLimit` in app.py caps the body.

Not covered: a client that reads a streamed reply slowly. Its generation goes on (bounded by max_tokens),
and the text it has not read is held in one joined string, not a growing queue (scheduler.Ticket).
"""

from __future__ import annotations

import asyncio

MAX_HEADER_BYTES = 16 * 1024  # h11's default, set explicitly: request line + headers


def header_deadline_protocol(seconds: float):
    """uvicorn's h11 protocol class, closing connections whose request headers are not in after ``seconds``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this keep-alive connection gets its own deadline

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(seconds, self._late)

        def _late(self) -> None:
            self._header_timer = None
            # IDLE: h11 has not yet parsed a whole request head on this connection (since the last response).
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took over %ss", seconds)
                self.transport.close()

    return HeaderDeadline


class BodyDeadline:
    """Pure ASGI middleware: a body not fully received ``seconds`` after the headers gets 408, connection closed.

    The app then sees the client as gone (``http.disconnect``); whatever it sends after the 408 is dropped.
    """

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        state = {"body_in": False, "started": False, "late": False}

        async def timed_receive():
            if state["late"]:
                return {"type": "http.disconnect"}
            if state["body_in"]:  # afterwards the app only listens for a disconnect: no deadline
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                state["late"] = True
                if not state["started"]:
                    await _send_408(send, self.seconds)
                return {"type": "http.disconnect"}
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                state["body_in"] = True
            return msg

        async def guarded_send(msg):
            if state["late"]:
                return
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not state["late"]:  # a body cut short by us is not the app's error
                raise


async def _send_408(send, seconds: float) -> None:
    import json

    from starchat.server import protocol as P

    body = json.dumps(
        P.ErrorResponse(
            error=P.ErrorBody(
                message=f"the request body did not arrive within {seconds:g} s",
                type="invalid_request_error",
                code="request_timeout",
            )
        ).model_dump()
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
