"""Idle and slow clients are dropped: raw loopback sockets that send nothing, or trickle headers or a body."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from serverkit import SlowEngine, live_server

from starchat.server import ServerSettings, create_app

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def url():
    settings = ServerSettings(header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_s=0.5)
    with live_server(create_app(SlowEngine(delay=0.001), settings)) as u:
        yield u


def _connect(url) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    s.settimeout(0.05)
    return s


def _trickle(s: socket.socket, data: bytes, every: float, limit: float = 5.0) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time; returns (what the server answered, seconds until it closed)."""
    start, got = time.monotonic(), b""
    for byte in data:
        if time.monotonic() - start > limit:
            break
        try:
            s.sendall(bytes([byte]))
        except OSError:  # reset: the server closed on us
            return got, time.monotonic() - start
        time.sleep(every)
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return got, time.monotonic() - start
        got += chunk
        if not chunk:
            return got, time.monotonic() - start
    return got, float("inf")


@pytest.mark.timing
def test_a_connection_that_sends_nothing_is_closed(url):
    with _connect(url) as s:
        s.settimeout(5)
        start = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - start < 4.5


@pytest.mark.timing
def test_fifty_silent_connections_are_all_closed(url):
    socks = [_connect(url) for _ in range(50)]
    try:
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\n")  # a request line, then nothing
        deadline = time.monotonic() + 5
        open_ = set(range(50))
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    if socks[i].recv(100) == b"":
                        open_.discard(i)
                except TimeoutError:
                    pass
                except OSError:
                    open_.discard(i)
        assert not open_, f"{len(open_)} of 50 connections still open after 5 s"
    finally:
        for s in socks:
            s.close()


@pytest.mark.timing
def test_headers_trickled_a_byte_at_a_time_are_cut_off(url):
    with _connect(url) as s:
        _, closed_after = _trickle(s, HEAD * 50, every=0.02)
    assert closed_after < 4.5  # without the deadline, each byte reset uvicorn's keep-alive timer


@pytest.mark.timing
def test_a_trickled_body_gets_408_and_the_connection_closes(url):
    body = b'{"messages": [{"role": "user", "content": "' + b"x" * 400 + b'"}]}'
    with _connect(url) as s:
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body))
        got, closed_after = _trickle(s, body, every=0.02)
    assert got.startswith(b"HTTP/1.1 408") and b"request_timeout" in got
    assert closed_after < 4.5


@pytest.mark.timing
def test_an_idle_keep_alive_connection_is_closed(url):
    with _connect(url) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        start, got = time.monotonic(), b""
        while chunk := s.recv(4096):
            got += chunk
        assert got.startswith(b"HTTP/1.1 200") and time.monotonic() - start < 4.5


def test_prompt_clients_are_not_affected(url):
    with httpx.Client(timeout=10) as c:
        for _ in range(3):  # keep-alive reuse, each request well within the deadlines
            r = c.post(
                url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "max_tokens": 3}
            )
            assert r.status_code == 200
            time.sleep(0.2)
