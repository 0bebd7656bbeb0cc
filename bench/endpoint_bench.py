"""`eval humaneval` through an endpoint (our own `starchat serve` on loopback) against the same run on the local engine.

Both runs: the same model, greedy, the same problems, batch size and token budget; the endpoint run
sends each batch's requests concurrently and the server batches them (llama.cpp slots, or the
transformers continuous batcher). Prints problems/minute of each (wall time of the whole run:
generation and sandbox), their ratio (target >= 0.9x), and whether pass@1 and the replies agree.

    python bench/endpoint_bench.py --limit 20                        # the default GGUF model (llama.cpp)
    python bench/endpoint_bench.py --limit 8 --backend transformers  # the same model on transformers
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, backend: str, max_batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    """`starchat serve` in its own process; returns it and its /v1 URL once /health answers."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "starchat",
        "serve",
        "--port",
        str(port),
        "--backend",
        backend,
        "--max-batch",
        str(max_batch),
    ] + (["--model", model] if model else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"starchat serve exited with {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"starchat serve did not start within 900 s; see {log}")


def timed_run(engine, out: Path, args, name: str) -> dict:
    from starchat.eval.humaneval import HumanEvalConfig, run_model

    cfg = HumanEvalConfig(
        output=out,
        limit=args.limit,
        temperature=0.0,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        progress=False,
    )
    t0 = time.monotonic()
    summary = run_model(engine, cfg, name)
    wall = time.monotonic() - t0
    replies = [json.loads(line)["raw"] for line in (out / "samples.jsonl").open()]
    return {
        "wall_s": round(wall, 1),
        "problems_per_minute": round(60 * summary["num_problems"] / wall, 3),
        "generation_problems_per_minute": summary["generation"]["problems_per_minute"],
        "pass@1": summary["pass_at_k"]["pass@1"],
        "replies": replies,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the offline SmolLM2-135M GGUF")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="problems per batch, both runs (= concurrency)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "endpoint.json"))
    args = ap.parse_args()

    from starchat.inference import load_engine

    work = Path(tempfile.mkdtemp(prefix="endpoint-bench-"))
    load = os.getloadavg()[0]
    engine = load_engine(args.model, backend=args.backend)
    local = timed_run(engine, work / "local", args, "local")
    engine.close()
    del engine  # free the model's memory and threads before the server loads its own copy
    proc, url = start_server(args.model, args.backend, args.batch_size, work / "serve.log")
    try:
        remote_engine = load_engine(url, concurrency=args.batch_size)
        remote = timed_run(remote_engine, work / "endpoint", args, "endpoint")
        remote_engine.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    same = sum(a == b for a, b in zip(local["replies"], remote["replies"]))
    result = {
        "model": args.model or "default (SmolLM2-135M-Instruct Q4_1 GGUF)",
        "backend": args.backend,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "load_average_at_start": round(load, 2),
        "cpus": os.cpu_count(),
        "local": {k: v for k, v in local.items() if k != "replies"},
        "endpoint": {k: v for k, v in remote.items() if k != "replies"},
        "ratio_problems_per_minute": round(remote["problems_per_minute"] / local["problems_per_minute"], 3),
        "same_pass@1": local["pass@1"] == remote["pass@1"],
        "identical_replies": f"{same}/{len(local['replies'])}",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
