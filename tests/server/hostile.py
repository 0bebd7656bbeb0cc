"""A misbehaving OpenAI-compatible server for the endpoint engine's tests: garbage JSON, non-string content,
lone surrogates, bodies that trickle, streams that never end. Threads on 127.0.0.1 (a random port); every
loop stops itself after ``LIFETIME`` seconds or when the client goes away."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIFETIME = 20.0  # the longest any reply goes on, whatever the client does


def completion(content, model="hostile") -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(content, finish=None) -> str:
    return (
        "data: "
        + json.dumps(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "hostile",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
            }
        )
        + "\n\n"
    )


class Hostile:
    """What the server does: ``mode`` picks the misbehaviour (see ``_handler``); ``reply`` is the chat
    answer of the well-behaved modes, ``requests`` what it was sent."""

    def __init__(self, mode: str = "ok", reply=None, models_body: bytes | None = None, pace: float = 0.1):
        self.mode, self.reply, self.models_body, self.pace = mode, reply, models_body, pace
        self.requests: list[dict] = []
        self.posts = 0


def _handler(h: Hostile):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _head(self, status=200, ctype="application/json", length=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.send_header("Connection", "close")
            self.end_headers()

        def _send(self, data: bytes, ctype="application/json"):
            self._head(200, ctype, len(data))
            self.wfile.write(data)

        def _drip(self, pieces):
            """Write ``pieces`` ``h.pace`` s apart until they run out, LIFETIME passes or the client leaves."""
            end = time.monotonic() + LIFETIME
            try:
                for piece in pieces:
                    if time.monotonic() > end:
                        return
                    self.wfile.write(piece)
                    self.wfile.flush()
                    time.sleep(h.pace)
            except OSError:  # the client went away: what the tests want
                return

        def do_GET(self):
            if h.models_body is not None:
                return self._send(h.models_body)
            self._send(
                json.dumps(
                    {"object": "list", "data": [{"id": "hostile", "object": "model", "created": 0, "owned_by": "me"}]}
                ).encode()
            )

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            h.requests.append(req)
            h.posts += 1
            mode = h.mode
            if mode == "ok":
                return self._send(json.dumps(h.reply(req) if callable(h.reply) else completion(h.reply)).encode())
            if mode == "raw":  # h.reply: the body as is
                return self._send(h.reply)
            if mode == "stream":  # h.reply: the SSE lines as is
                self._head(ctype="text/event-stream")
                return self._drip(x.encode() for x in h.reply)
            if mode == "trickle-body":  # a valid reply, a byte per pace
                data = json.dumps(completion("trickled")).encode()
                self._head(length=len(data))
                return self._drip(data[i : i + 1] for i in range(len(data)))
            if mode == "trickle-headers":  # the status line, then a header a byte per pace
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                return self._drip(b"X" for _ in range(10**6))
            if mode == "keep-alive":  # a stream of SSE comments that never ends
                self._head(ctype="text/event-stream")
                return self._drip(b": keep-alive\n\n" for _ in range(10**6))
            if mode == "endless":  # a stream of tokens that never ends, whatever max_tokens said
                self._head(ctype="text/event-stream")
                return self._drip(chunk("tok ").encode() for _ in range(10**6))
            if mode == "huge":  # one reply far over any sane size
                content = "x" * 20_000_000
                return self._send(json.dumps(completion(content)).encode())
            raise AssertionError(f"unknown mode {mode}")

    return Handler


@contextlib.contextmanager
def hostile_server(h: Hostile):
    """Serve ``h`` on 127.0.0.1 (a free port); yields the /v1 URL. Replies still going end within LIFETIME."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(h))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
