"""Benchmark: 16 concurrent streaming clients against 1, over loopback, on a live `starchat serve`.

For each model the server runs in its own process (`python -m starchat serve`), and this process
drives it with asyncio + httpx streaming clients. Reported per model: aggregate completion tokens/s
with 1 client (requests one after another) and with 16 at once, their ratio, p50/p95 time to first
token (first visible text), and failed requests. Models:
  - tiny: a random 2-layer GPT-BigCode (64 wide) with SmolLM2's tokenizer, transformers backend;
  - default: the offline SmolLM2-135M-Instruct GGUF, on the transformers backend (continuous
    batching, dequantized) and on llama.cpp (16 parallel slots in one context).

Run: .venv/bin/python bench/serve_bench.py [--only tiny|default-hf|default-llamacpp] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
PROMPTS = ["Write a Python function that reverses a string.", "How do I sort a dict by value?",
           "Explain list comprehensions with an example.", "Write a bash loop over files.",
           "What is a Python generator?", "Write a function to check for primes.",
           "How do I read a JSON file in Python?", "Explain the GIL briefly."]


def make_tiny_model(out: Path) -> Path:
    """A random 2-layer GPT-BigCode with the default model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, GPTBigCodeConfig, GPTBigCodeForCausalLM

    from starchat.inference import default_model_path

    gguf = Path(default_model_path())
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = GPTBigCodeConfig(vocab_size=len(tok), n_positions=1024, n_embd=64, n_layer=2, n_head=4,
                           eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    GPTBigCodeForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, backend: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "starchat", "serve", "--model", model, "--backend", backend,
           "--port", str(port), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, sampling: dict) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, **sampling}
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"ok": False, "why": f"HTTP {r.status_code}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and ttft is None:
                    ttft = time.perf_counter() - t0
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as e:
        return {"ok": False, "why": repr(e)}
    end = time.perf_counter() - t0
    return {"ok": True, "ttft": ttft if ttft is not None else end, "tokens": tokens, "seconds": end}


async def run_clients(url: str, n_clients: int, per_client: int, max_tokens: int, sampling: dict) -> dict:
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:
        async def worker(i: int) -> list[dict]:
            return [await one_request(client, url, PROMPTS[(i + k) % len(PROMPTS)], max_tokens, sampling)
                    for k in range(per_client)]

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(i) for i in range(n_clients))) for r in rs]
        wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    ttfts = sorted(r["ttft"] for r in ok)
    tokens = sum(r["tokens"] for r in ok)
    return {"clients": n_clients, "requests": len(results), "failed": len(results) - len(ok), "tokens": tokens,
            "wall_s": wall, "tok_s": tokens / wall, "ttft_p50": _pct(ttfts, 50), "ttft_p95": _pct(ttfts, 95)}


def _pct(xs: list[float], p: int) -> float:
    if not xs:
        return float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] if len(xs) > 1 else xs[0]


def bench(name: str, model: str, backend: str, extra: list[str], max_tokens: int, sampling: dict) -> dict:
    proc, url = start_server(model, backend, extra)
    try:
        asyncio.run(run_clients(url, 2, 1, 8, sampling))  # warm-up: first-call allocations, thread pools
        single = asyncio.run(run_clients(url, 1, 4, max_tokens, sampling))
        many = asyncio.run(run_clients(url, 16, 1, max_tokens, sampling))
    finally:
        proc.terminate()
        proc.wait(30)
    row = {"name": name, "single": single, "many": many, "ratio": many["tok_s"] / single["tok_s"]}
    print(f"{name:<34} 1 client {single['tok_s']:7.1f} tok/s  TTFT p50 {single['ttft_p50']:.3f}s | "
          f"16 clients {many['tok_s']:7.1f} tok/s  TTFT p50 {many['ttft_p50']:.3f}s p95 {many['ttft_p95']:.3f}s | "
          f"x{row['ratio']:.2f}  failed {single['failed'] + many['failed']}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["tiny", "default-hf", "default-llamacpp"], default=None)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    from starchat.inference import default_model_path

    # Sampling as in the playground; min length is not an OpenAI knob, so replies may end early
    # on the end token: throughput counts the tokens actually generated.
    sampling = {"temperature": 0.7, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.2}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "tiny"):
            tiny = make_tiny_model(Path(tmp) / "tiny")
            rows.append(bench("tiny / transformers (batching)", str(tiny), "transformers", [], args.max_tokens,
                              sampling))
        if args.only in (None, "default-hf"):
            rows.append(bench("default / transformers (batching)", default_model_path(), "transformers", [],
                              args.max_tokens, sampling))
        if args.only in (None, "default-llamacpp"):
            rows.append(bench("default / llama.cpp (16 slots)", default_model_path(), "llamacpp", [],
                              args.max_tokens, sampling))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
