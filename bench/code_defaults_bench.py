"""Benchmark: which sampling defaults serve code. 12 coding prompts x 3 seeds on the default model (SmolLM2 GGUF via
llama.cpp), per setting: replies that end with a code fence still open, that were cut off at the token limit,
whose Python does not compile, and that looped (the same lines over and over until the limit).

Settings: "old" (the old playground's: repetition penalty 1.2, 512 tokens), "chat" (what `starchat chat` now
uses on this model: SamplingParams' defaults under the model's own saved ones) and any --setting NAME:k=v,...

Run: .venv/bin/python bench/code_defaults_bench.py [--threads 2] [--setting cards256:max_new_tokens=256]
Results: a table on stdout and bench/results/code_defaults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from starchat.chat.advice import repeated_tail  # noqa: E402
from starchat.fsio import write_text_atomic  # noqa: E402
from starchat.inference import SamplingParams, load_engine  # noqa: E402
from starchat.inference.params import resolve_sampling  # noqa: E402
from starchat.review import code_blocks, review  # noqa: E402

# 12 of the project's coding prompts (src/starchat/eval/prompts/coding.jsonl): Python, so the code can be compiled
PROMPT_IDS = [
    "write-001",
    "write-002",
    "write-003",
    "write-004",
    "write-005",
    "write-006",
    "debug-001",
    "debug-002",
    "refactor-001",
    "refactor-002",
    "test-001",
    "test-002",
]
SEEDS = (0, 1, 2)
OLD = SamplingParams(temperature=0.2, top_k=50, top_p=0.95, repetition_penalty=1.2, max_new_tokens=512)


def prompts() -> list[dict]:
    path = ROOT / "src/starchat/eval/prompts/coding.jsonl"
    by_id = {d["id"]: d for d in map(json.loads, path.read_text().splitlines()) if d.get("language") == "python"}
    missing = [i for i in PROMPT_IDS if i not in by_id]
    if missing:
        raise SystemExit(f"{path}: no Python prompt with id {', '.join(missing)}")
    return [by_id[i] for i in PROMPT_IDS]


def judge(text: str, finish_reason: str) -> dict:
    found = review(text, finish_reason=finish_reason)
    return {
        "unclosed": any(not b.closed for b in code_blocks(text)),
        "cut": finish_reason == "length",
        "no_compile": any(f.kind == "syntax" for f in found),
        "looped": finish_reason == "length" and repeated_tail(text) is not None,
        "no_code": not code_blocks(text),
    }


def run_setting(engine, params: SamplingParams, items: list[dict]) -> dict:
    rows, tokens, t0 = [], 0, time.perf_counter()
    for item in items:
        for seed in SEEDS:
            c = engine.generate([{"role": "user", "content": item["prompt"]}], params.replace(seed=seed))
            tokens += c.completion_tokens
            rows.append(
                {
                    "id": item["id"],
                    "seed": seed,
                    "finish": c.finish_reason,
                    "tokens": c.completion_tokens,
                    **judge(c.text, c.finish_reason),
                    "text": c.text,
                }
            )
            print(
                f"  {len(rows)}/{len(items) * len(SEEDS)} {item['id']} seed {seed}: {c.completion_tokens} tokens, "
                f"{c.finish_reason}",
                file=sys.stderr,
                flush=True,
            )
    counts = {k: sum(r[k] for r in rows) for k in ("unclosed", "cut", "no_compile", "looped", "no_code")}
    return {
        "params": {k: v for k, v in vars(params).items() if k not in ("stop", "seed")},
        "replies": len(rows),
        **counts,
        "tokens": tokens,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }


def parse_setting(text: str, base: SamplingParams) -> tuple[str, SamplingParams]:
    name, _, pairs = text.partition(":")
    params = base
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        params = params.update_from_string(key.strip(), value.strip())
    return name, params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the idle CPUs)")
    ap.add_argument(
        "--setting", action="append", default=[], help="NAME:key=value,... on top of the chat's defaults (repeatable)"
    )
    ap.add_argument("--only", default=None, help="comma-separated setting names to run (default: all)")
    ap.add_argument("--output", default=str(ROOT / "bench/results/code_defaults.json"))
    args = ap.parse_args()

    engine = load_engine(None, **({"n_threads": args.threads} if args.threads else {}))
    metadata = getattr(getattr(engine, "llm", None), "metadata", None)
    chat = resolve_sampling(None, metadata if isinstance(metadata, dict) else None)
    settings = {"old": OLD, "chat": chat, **dict(parse_setting(s, chat) for s in args.setting)}
    if args.only:
        settings = {k: v for k, v in settings.items() if k in args.only.split(",")}
    items = prompts()
    results = {}
    print(
        f"{'setting':<12}{'replies':>8}{'unclosed':>10}{'cut':>6}{'no-compile':>12}{'looped':>8}{'no-code':>9}"
        f"{'tokens':>8}{'s':>7}  params",
        flush=True,
    )
    for name, params in settings.items():
        r = results[name] = run_setting(engine, params, items)
        shown = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        print(
            f"{name:<12}{r['replies']:>8}{r['unclosed']:>10}{r['cut']:>6}{r['no_compile']:>12}{r['looped']:>8}"
            f"{r['no_code']:>9}{r['tokens']:>8}{r['seconds']:>7}  {shown}",
            flush=True,
        )
        out = {"model": engine.model_name, "prompts": PROMPT_IDS, "seeds": list(SEEDS), "settings": results}
        write_text_atomic(args.output, json.dumps(out, indent=1) + "\n")  # after each setting: a long run keeps
    engine.close()
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
