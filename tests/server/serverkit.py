"""Helpers for the server tests: a live uvicorn server on a free loopback port, and a slow fake engine."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from starchat.inference import Engine, SamplingParams


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 (a free port, bound before the server starts), configured as
    `starchat serve` configures it (its settings' deadlines and limits); yields the base URL."""
    import uvicorn

    from starchat.server.run import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, app.state.settings, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class SlowEngine(Engine):
    """A real Engine whose 'model' emits word tokens at a fixed pace: makes timing-dependent tests deterministic."""

    model_name = "slow-fake"
    context_length = 1000
    eos_token_ids = [0]

    def __init__(self, delay: float = 0.05):
        super().__init__()
        self.delay = delay
        self.started = threading.Event()
        self.active = 0  # generations running now

    def encode_prompt(self, messages, add_generation_prompt=True):
        return [1] + [len(m["content"]) % 50 + 1 for m in messages]

    def encode_text(self, text):
        return [1] + [2] * len(text.split())

    def decode(self, ids):
        return "".join(f"w{i} " for i in ids)

    def _tokens(self, prompt_ids, params: SamplingParams, max_new_tokens):
        self.started.set()
        self.active += 1
        try:
            for i in range(max_new_tokens):
                time.sleep(self.delay)
                yield 1 + i % 9
        finally:  # runs when the engine closes the generator: cancelled, stopped or done
            self.active -= 1
