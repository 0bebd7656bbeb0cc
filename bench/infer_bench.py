"""Benchmark: starchat's inference engine against the raw libraries it wraps, all measured in this run.

1. llama.cpp backend, batch 1, default model (SmolLM2-135M-Instruct Q4_1): decode tokens/s of
   ``engine.stream`` vs raw ``llama_cpp.Llama.create_completion(stream=True)`` on the same file with the
   same settings (cards' sampling, same seed, min_p/typical off), the two streams stepped alternately; plus the
   fraction of the memory-bandwidth bound (weight bytes per token / read bandwidth measured here on
   every core).
2. transformers backend, the same model dequantized by transformers: tokens/s of ``engine.generate``
   vs a transformers ``pipeline("text-generation")`` with the cards' settings and the same seed;
   time to first token of ``engine.stream``.
3. transformers backend, 16 prompts: ``generate_batch`` vs one ``generate`` after another (tokens/s).

Run: .venv/bin/python bench/infer_bench.py [--tokens 128] [--repeats 3]   (results also in bench/results/)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from starchat.inference import SamplingParams, default_model_path, load_engine  # noqa: E402

QUESTIONS = [
    "Write a Python function that reverses a string.",
    "How do I sort a list of dicts by a key in Python?",
    "Explain what a Python generator is.",
    "Write a function that checks if a number is prime.",
    "How do I read a CSV file with pandas?",
    "What is the difference between a list and a tuple?",
    "Write a SQL query that counts rows per day.",
    "How do I make an HTTP request in Python?",
    "Write a bash loop over all .txt files.",
    "What does the `yield` keyword do?",
    "How do I merge two dictionaries?",
    "Write a binary search in Python.",
    "How do I remove duplicates from a list, keeping order?",
    "Explain Python decorators with an example.",
    "Write a function that flattens a nested list.",
    "How do I time a function in Python?",
]
CARDS = SamplingParams()  # temperature 0.2, top_k 50, top_p 0.95, repetition_penalty 1.2


def msgs(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


def read_bandwidth(threads: int, mb: int = 512, rounds: int = 3) -> float:
    """GB/s of reading big arrays with one numpy reduction per core (numpy releases the GIL)."""
    import numpy as np

    arrays = [np.ones(mb * 2**20 // 8) for _ in range(threads)]
    best = 0.0
    for _ in range(rounds):
        ts = [threading.Thread(target=a.sum) for a in arrays]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = max(best, threads * mb * 2**20 / (time.perf_counter() - t0) / 1e9)
    return best


def paired_decode_seconds(a, b) -> tuple[float, float, list[str], list[str]]:
    """Step two text streams alternately, timing each step: (seconds in a, seconds in b, a's chunks, b's chunks).

    The first step of each (prompt evaluation, first token) is left out. As the two advance side by side,
    a burst of load from other processes lands on both instead of on whichever happened to run then.
    """
    times, chunks, alive = [0.0, 0.0], [[], []], [iter(a), iter(b)]
    for i, it in enumerate(alive):
        chunks[i].append(next(it))
    while any(alive):
        for i, it in enumerate(alive):
            if it is None:
                continue
            t = time.perf_counter()
            try:
                chunks[i].append(next(it))
            except StopIteration:
                alive[i] = None
            times[i] += time.perf_counter() - t
    return times[0], times[1], chunks[0], chunks[1]


def bench_llamacpp(args) -> dict:
    from llama_cpp import Llama

    from starchat import threads as policy

    path = default_model_path()
    threads = policy.current()  # the CLI's choice (both sides get it)
    engine = load_engine(path, n_ctx=2048, n_threads=threads)
    import llama_cpp

    from starchat.inference.llamacpp import amx_guard

    with amx_guard(llama_cpp):  # the same weight layout as the engine's (no AMX repacking where it crashes)
        raw = Llama(
            model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, flash_attn=True, verbose=False
        )  # flash attention as the engine runs it: the same logits
    q = QUESTIONS[13]  # asks for an explanation with an example: a long reply
    params = CARDS.replace(max_new_tokens=args.tokens, seed=1)
    prompt_ids = engine.encode_prompt(msgs(q))

    def ours():
        yield from engine.stream(prompt_ids, params)

    def theirs():
        for chunk in raw.create_completion(
            prompt_ids,
            max_tokens=args.tokens,
            temperature=CARDS.temperature,
            top_k=CARDS.top_k,
            top_p=CARDS.top_p,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=CARDS.repetition_penalty,
            seed=1,
            stream=True,
        ):
            yield chunk["choices"][0]["text"]

    warm = engine.generate(prompt_ids, params)  # warm-up; same seed and settings: both make these tokens
    list(theirs())
    ours_s = raw_s = 0.0
    same = True
    for _ in range(args.repeats):
        a_s, b_s, a_text, b_text = paired_decode_seconds(ours(), theirs())
        ours_s, raw_s = ours_s + a_s, raw_s + b_s
        same &= "".join(a_text) == "".join(b_text) == warm.text
    decoded = args.repeats * (warm.completion_tokens - 1)
    ours_r, raw_r = decoded / ours_s, decoded / raw_s
    # What starchat adds per token (detokenizing, stop strings, the loop), timed alone by replaying the
    # tokens: unlike tokens/s it hardly moves when other processes share the CPU.
    from starchat.inference.textstream import TextAssembler

    t = time.perf_counter()
    for _ in range(10):
        asm = TextAssembler(engine.decode, ["</s>", "\n\n\n"], prompt_tail=prompt_ids)
        for tok in warm.token_ids:
            asm.feed(tok)
    overhead_s = (time.perf_counter() - t) / 10 / max(1, len(warm.token_ids))
    bw = read_bandwidth(threads)
    weight_bytes = os.path.getsize(path)
    bound = bw * 1e9 / weight_bytes
    return {
        "model": os.path.basename(path),
        "tokens": warm.completion_tokens,
        "same_text": same,
        "starchat_tok_s": round(ours_r, 1),
        "raw_llama_cpp_tok_s": round(raw_r, 1),
        "ratio": round(ours_r / raw_r, 3),
        "starchat_overhead_us_per_token": round(overhead_s * 1e6, 1),
        "overhead_share_of_a_token": round(overhead_s * ours_r, 4),
        "read_bandwidth_GB_s": round(bw, 1),
        "bandwidth_bound_tok_s": round(bound, 1),
        "fraction_of_bound": round(ours_r / bound, 3),
    }


def bench_transformers(args) -> tuple[dict, dict]:
    import torch
    from transformers import pipeline

    path = default_model_path()
    t0 = time.perf_counter()
    engine = load_engine(path, backend="transformers")  # transformers dequantizes the GGUF
    load_s = time.perf_counter() - t0
    pipe = pipeline("text-generation", model=engine.model, tokenizer=engine.tokenizer)
    n = args.hf_tokens
    params = CARDS.replace(max_new_tokens=n, seed=0)

    def run_pipe(q):
        torch.manual_seed(0)
        out = pipe(
            msgs(q),
            max_new_tokens=n,
            do_sample=True,
            temperature=CARDS.temperature,
            top_k=CARDS.top_k,
            top_p=CARDS.top_p,
            repetition_penalty=CARDS.repetition_penalty,
            eos_token_id=engine.eos_token_ids,
            return_full_text=False,
        )
        return out[0]["generated_text"]

    def run_ours(q):
        return engine.generate(msgs(q), params)

    qs = QUESTIONS[: args.hf_prompts]
    run_ours(qs[0]), run_pipe(qs[0])  # warm-up: first-call allocations
    ratios, ours_t, pipe_t, ours_tok, same = [], 0.0, 0.0, 0, True
    for r in range(args.hf_runs):  # alternating order, so drifting load lands on both sides
        t_ours = t_pipe = 0.0
        for q in qs:
            for side in ("ours", "pipe") if r % 2 == 0 else ("pipe", "ours"):
                t = time.perf_counter()
                if side == "ours":
                    c = run_ours(q)
                    t_ours += time.perf_counter() - t
                    ours_tok += c.completion_tokens
                    ours_text = c.text
                else:
                    pipe_text = run_pipe(q)
                    t_pipe += time.perf_counter() - t
            same &= ours_text.strip() == pipe_text.strip()
        ratios.append(t_pipe / t_ours)
        ours_t, pipe_t = ours_t + t_ours, pipe_t + t_pipe
        print(f"  transformers run {r + 1}: starchat {t_pipe / t_ours:.3f}x pipeline()", flush=True)
    ttft = []
    for q in qs:
        t = time.perf_counter()
        gen = engine.stream(msgs(q), params)
        next(gen)
        ttft.append(time.perf_counter() - t)
        gen.close()
    single = {
        "model": "SmolLM2-135M-Instruct (transformers, f32)",
        "load_s": round(load_s, 1),
        "prompts": args.hf_prompts,
        "runs": args.hf_runs,
        "tokens": ours_tok,
        "same_text_as_pipeline": same,
        "starchat_tok_s": round(ours_tok / ours_t, 1),
        "pipeline_tok_s": round(ours_tok / pipe_t, 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios],
        "time_to_first_token_ms": round(1000 * statistics.median(ttft), 1),
    }

    if args.skip_batch:
        return single, {}
    bparams = CARDS.replace(max_new_tokens=args.batch_tokens, seed=0)
    t = time.perf_counter()
    seq = [engine.generate(msgs(q), bparams) for q in QUESTIONS]
    seq_t = time.perf_counter() - t
    t = time.perf_counter()
    bat = engine.generate_batch([msgs(q) for q in QUESTIONS], bparams)
    bat_t = time.perf_counter() - t
    seq_tps = sum(c.completion_tokens for c in seq) / seq_t
    bat_tps = sum(c.completion_tokens for c in bat) / bat_t
    batch = {
        "prompts": len(QUESTIONS),
        "max_new_tokens": args.batch_tokens,
        "sequential_tok_s": round(seq_tps, 1),
        "batched_tok_s": round(bat_tps, 1),
        "ratio": round(bat_tps / seq_tps, 2),
    }
    return single, batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128, help="max new tokens, llama.cpp runs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hf-tokens", type=int, default=64)
    ap.add_argument("--hf-prompts", type=int, default=4)
    ap.add_argument("--hf-runs", type=int, default=5, help="alternating runs; the median ratio is reported")
    ap.add_argument("--batch-tokens", type=int, default=64)
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--quick", action="store_true", help="short runs: checks the bench works")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.repeats, args.hf_tokens, args.hf_prompts, args.hf_runs = 32, 1, 16, 2, 3
        args.batch_tokens = 16
    from starchat import threads

    plan = threads.apply()  # what every starchat command does first: both sides run with its threads
    # Other processes on the machine slow llama.cpp's threads a lot: the load average is part of the result.
    results = {"threads": plan.threads, "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]}
    if not args.skip_llamacpp:
        results["llamacpp"] = bench_llamacpp(args)
        print(json.dumps(results["llamacpp"], indent=1), flush=True)
    if not args.skip_transformers:
        results["transformers"], results["batch"] = bench_transformers(args)
        print(json.dumps({k: results[k] for k in ("transformers", "batch")}, indent=1))
    results["load_avg_at_end"] = os.getloadavg()[0]
    out = Path(__file__).parent / "results" / "infer.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    summary = []
    if "llamacpp" in results:
        lc = results["llamacpp"]
        summary += [
            f"llama.cpp decode: starchat {lc['ratio']}x raw llama-cpp-python "
            f"({lc['starchat_tok_s']} vs {lc['raw_llama_cpp_tok_s']} tok/s), "
            f"{lc['fraction_of_bound']:.0%} of the bandwidth bound "
            f"({lc['bandwidth_bound_tok_s']} tok/s at {lc['read_bandwidth_GB_s']} GB/s)"
        ]
    if "transformers" in results:
        t, b = results["transformers"], results["batch"]
        summary += [
            f"transformers: starchat {t['ratio']}x pipeline() (median of {t['runs']} alternating runs "
            f"{t['ratios']}; target >= 1.0: {'met' if t['ratio'] >= 1.0 else 'NOT met'}), "
            f"same text: {t['same_text_as_pipeline']}, first token {t['time_to_first_token_ms']} ms"
        ]
        if b:
            summary.append(f"batch of 16: {b['ratio']}x one after another")
    summary.append(
        f"load average {results['load_avg_at_start']:.1f} -> {results['load_avg_at_end']:.1f} on {results['cpus']} CPUs"
    )
    print("\n".join(summary))


if __name__ == "__main__":
    main()
