"""`starchat serve` as users run it: a subprocess on a loopback port, and its argument errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from starchat.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
def test_starchat_serve_runs_on_loopback_with_an_api_key(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(SRC), STARCHAT_API_KEY="k1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "starchat",
            "serve",
            "--model",
            str(tiny_model_dir),
            "--port",
            str(port),
            "--max-batch",
            "4",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 401
        r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k1"}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        assert httpx.get(url + "/health").json() == {"status": "ok"}  # public, but says nothing more
        assert httpx.get(url + "/health", headers={"Authorization": "Bearer k1"}).json()["slots"] == 4
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"at http://127.0.0.1:{port}/v1" in out


def test_tensor_parallel_without_vllm_is_a_clear_error(capsys):
    assert main(["serve", "--tensor-parallel-size", "2"]) == 2
    assert "--tensor-parallel-size needs --backend vllm" in capsys.readouterr().err
