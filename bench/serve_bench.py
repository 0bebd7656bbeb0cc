"""Benchmark: `starchat serve` against llama.cpp's own llama-server, and 16 streaming clients against 1.

Against llama-server (the anchor a user would run instead): the llama-server built from the llama.cpp
source that the installed llama-cpp-python vendors (bench/llama_server_build.py, cached in .runs/bench),
the same GGUF, KV cells, -np 16 slots, threads and sampling, driven by the same 16 streaming clients in
alternating rounds. Reported: aggregate tokens/s of both and their ratio (target starchat >= 0.9x),
p50/p95 time to first token of both.

For each model the server runs in its own process (`python -m starchat serve`), and this process
drives it with asyncio + httpx streaming clients. Reported per model: aggregate completion tokens/s
with 1 client (requests one after another) and with 16 at once, their ratio, p50/p95 time to first
token (first visible text), and failed requests. Models:
  - tiny: a random 2-layer GPT-BigCode (64 wide) with SmolLM2's tokenizer, transformers backend;
  - default: the offline SmolLM2-135M-Instruct GGUF, on the transformers backend (continuous
    batching, dequantized) and on llama.cpp (16 parallel slots in one context).

Run: .venv/bin/python bench/serve_bench.py [--only llama-server|tiny|default-hf|default-llamacpp] [--quick]
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
PROMPTS = [
    "Write a Python function that reverses a string.",
    "How do I sort a dict by value?",
    "Explain list comprehensions with an example.",
    "Write a bash loop over files.",
    "What is a Python generator?",
    "Write a function to check for primes.",
    "How do I read a JSON file in Python?",
    "Explain the GIL briefly.",
]


def make_tiny_model(out: Path) -> Path:
    """A random 2-layer GPT-BigCode with the default model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, GPTBigCodeConfig, GPTBigCodeForCausalLM

    from starchat.inference import default_model_path

    gguf = Path(default_model_path())
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = GPTBigCodeConfig(
        vocab_size=len(tok),
        n_positions=1024,
        n_embd=64,
        n_layer=2,
        n_head=4,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    GPTBigCodeForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, backend: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "starchat",
        "serve",
        "--model",
        model,
        "--backend",
        backend,
        "--port",
        str(port),
        *extra,
    ]
    return wait_healthy(cmd, port)


def wait_healthy(cmd: list[str], port: int, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` (a server on ``port``) and wait for its /health to answer 200."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"server did not start in {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    proc.log.close()


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, sampling: dict) -> dict:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling,
    }
    t0 = time.perf_counter()
    ttft, tokens, chunks = None, 0, 0
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"ok": False, "why": f"HTTP {r.status_code}: {(await r.aread())[:300]!r}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as e:
        return {"ok": False, "why": repr(e)}
    end = time.perf_counter() - t0
    # A server that does not report usage: one streamed chunk per token (llama-server streams so).
    return {"ok": True, "ttft": ttft if ttft is not None else end, "tokens": tokens or chunks, "seconds": end}


async def run_clients(url: str, n_clients: int, per_client: int, max_tokens: int, sampling: dict) -> dict:
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:

        async def worker(i: int) -> list[dict]:
            return [
                await one_request(client, url, PROMPTS[(i + k) % len(PROMPTS)], max_tokens, sampling)
                for k in range(per_client)
            ]

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(i) for i in range(n_clients))) for r in rs]
        wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    ttfts = sorted(r["ttft"] for r in ok)
    tokens = sum(r["tokens"] for r in ok)
    why = next((r["why"] for r in results if not r["ok"]), None)
    return {
        "clients": n_clients,
        "requests": len(results),
        "failed": len(results) - len(ok),
        "why": why,
        "tokens": tokens,
        "wall_s": wall,
        "tok_s": tokens / wall,
        "ttft_p50": _pct(ttfts, 50),
        "ttft_p95": _pct(ttfts, 95),
    }


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
        stop_server(proc)
    row = {"name": name, "single": single, "many": many, "ratio": many["tok_s"] / single["tok_s"]}
    print(
        f"{name:<34} 1 client {single['tok_s']:7.1f} tok/s  TTFT p50 {single['ttft_p50']:.3f}s | "
        f"16 clients {many['tok_s']:7.1f} tok/s  TTFT p50 {many['ttft_p50']:.3f}s p95 {many['ttft_p95']:.3f}s | "
        f"x{row['ratio']:.2f}  failed {single['failed'] + many['failed']}",
        flush=True,
    )
    return row


def run_round(cmd_for_port, sampling: dict, args) -> dict:
    """Start a server, warm it up, drive it with ``args.clients`` streaming clients, stop it."""
    port = free_port()
    proc, url = wait_healthy(cmd_for_port(port), port)
    try:
        asyncio.run(run_clients(url, 2, 1, 8, sampling))  # warm-up: first-call allocations, thread pools
        return asyncio.run(run_clients(url, args.clients, args.per_client, args.max_tokens, sampling))
    finally:
        stop_server(proc)


def bench_vs_llama_server(args, sampling: dict) -> dict:
    """`starchat serve` (llama.cpp slots) against llama.cpp's own llama-server: same GGUF, KV cells, slots,
    threads and sampling, the same streaming clients; rounds alternate, the best of each side is kept."""
    sys.path.insert(0, str(Path(__file__).parent))
    import llama_server_build
    from starchat import threads
    from starchat.inference import default_model_path

    binary = str(llama_server_build.build())
    model = default_model_path()
    n = str(args.threads or threads.plan().threads)
    kv, slots = str(args.kv_tokens), str(args.clients)

    def ours(port):
        return [
            sys.executable,
            "-m",
            "starchat",
            "serve",
            "--model",
            model,
            "--backend",
            "llamacpp",
            "--port",
            str(port),
            "--max-batch",
            slots,
            "--kv-tokens",
            kv,
            "--threads",
            n,
        ]

    # -c is the KV cells of all slots together; --kv-unified shares them as starchat's slots do.
    # Our llama-server is a native build: on an AMX CPU it has the AMX repacking that segfaults there
    # (see starchat.inference.llamacpp.amx_guard), so it runs without extra weight buffers, as starchat's
    # engine does on such a build. For the default Q4_1 GGUF no other repacking applies (llama.cpp keeps
    # every tensor in plain CPU buffers), so both sides use the same weight layout.
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    same_weights = ["--no-repack"] if " amx_int8" in cpu_flags else []

    def theirs(port):
        return [
            binary,
            "-m",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            kv,
            "-np",
            slots,
            "--kv-unified",
            "-t",
            n,
            "-tb",
            n,
            *same_weights,
        ]

    # The same rule in both: llama-server's min-p (on by default) off, its penalty over the whole context
    # as transformers' (and starchat's) repetition penalty.
    their_sampling = {k: v for k, v in sampling.items() if k != "repetition_penalty"}
    their_sampling.update(repeat_penalty=sampling["repetition_penalty"], repeat_last_n=4096, min_p=0.0)
    best: dict[str, dict] = {}
    every: dict[str, list[float]] = {"starchat": [], "llama-server": []}
    sides = (("starchat", ours, sampling), ("llama-server", theirs, their_sampling))
    for r in range(args.repeats):
        for name, cmd, samp in sides if r % 2 == 0 else sides[::-1]:
            res = run_round(cmd, samp, args)
            print(
                f"  round {r + 1} {name:<13}{res['tok_s']:7.1f} tok/s  TTFT p50 {res['ttft_p50']:.3f}s "
                f"p95 {res['ttft_p95']:.3f}s  {res['tokens']} tokens  failed {res['failed']}",
                flush=True,
            )
            if not res["tokens"]:
                raise RuntimeError(f"{name}: every request failed, e.g. {res['why']}")
            every[name].append(res["tok_s"])
            if name not in best or res["tok_s"] > best[name]["tok_s"]:
                best[name] = res
    a, b = best["starchat"], best["llama-server"]
    median_ratio = statistics.median(every["starchat"]) / statistics.median(every["llama-server"])
    ratio = a["tok_s"] / b["tok_s"]
    print(
        f"{args.clients} streaming clients x {args.per_client} requests, max_tokens {args.max_tokens}, "
        f"{n} threads, load average {os.getloadavg()[0]:.1f}"
    )
    for name, x in (("llama-server", b), ("starchat", a)):
        print(f"  {name:<13}{x['tok_s']:7.1f} tok/s  TTFT p50 {x['ttft_p50']:.3f}s  p95 {x['ttft_p95']:.3f}s")
    print(
        f"starchat serve vs llama-server: {ratio:.2f}x aggregate tokens/s, best rounds "
        f"(target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}); {median_ratio:.2f}x of the median rounds",
        flush=True,
    )
    return {
        "name": "starchat vs llama-server",
        "starchat": a,
        "llama_server": b,
        "ratio": ratio,
        "median_ratio": median_ratio,
        "rounds": every,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only",
        choices=["llama-server", "tiny", "default-hf", "default-llamacpp"],
        default=None,
        help="one comparison (default: all)",
    )
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16, help="streaming clients (and slots) against llama-server")
    ap.add_argument("--per-client", type=int, default=2, help="requests each client sends, one after another")
    ap.add_argument("--kv-tokens", type=int, default=16384, help="KV cells shared by the slots, both servers")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds against llama-server")
    ap.add_argument("--threads", type=int, default=None, help="both servers (default: starchat's thread policy)")
    ap.add_argument("--quick", action="store_true", help="llama-server only, 32 tokens, 1 round")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.quick:
        args.only, args.max_tokens, args.repeats, args.per_client = "llama-server", 32, 1, 1
    from starchat.inference import default_model_path

    # Sampling as in the playground; min length is not an OpenAI knob, so replies may end early
    # on the end token: throughput counts the tokens actually generated.
    sampling = {"temperature": 0.7, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.2}
    rows = []
    if args.only in (None, "llama-server"):
        rows.append(bench_vs_llama_server(args, sampling))
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "tiny"):
            tiny = make_tiny_model(Path(tmp) / "tiny")
            rows.append(
                bench("tiny / transformers (batching)", str(tiny), "transformers", [], args.max_tokens, sampling)
            )
        if args.only in (None, "default-hf"):
            rows.append(
                bench(
                    "default / transformers (batching)",
                    default_model_path(),
                    "transformers",
                    [],
                    args.max_tokens,
                    sampling,
                )
            )
        if args.only in (None, "default-llamacpp"):
            rows.append(
                bench("default / llama.cpp (16 slots)", default_model_path(), "llamacpp", [], args.max_tokens, sampling)
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
