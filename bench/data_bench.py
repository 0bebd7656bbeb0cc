"""Benchmark: tokenize + mask + pack 20k synthetic multi-turn dialogues against a naive baseline.

The baseline is the common approach (FastChat-style): tokenize each dialogue, then find each
reply's mask by re-tokenizing the rendered prefixes before and after it. Ours renders once,
tokenizes whole batches with offsets in the tokenizer's parallel Rust encoder, and derives the
mask from character spans. Both run in this process on the same data and tokenizer (a byte-level
BPE of ~49k tokens trained here), and the masks are checked to be equal on a sample.

Run: .venv/bin/python bench/data_bench.py [--dialogues 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the point: use every core
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from starchat.data.pack import pack_dataset  # noqa: E402
from starchat.data.tokenize import IGNORE_INDEX, tokenize_dataset  # noqa: E402
from starchat.templates import prepare_tokenizer, render  # noqa: E402

WORDS = (
    "def class return list dict sort reverse python function loop index value error string "
    "file read write import numpy array matrix thread lock async await test assert print "
    "the a to of and in is it that for with as on this you can use how what why"
).split()


def synth(n: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)

    def text(k):
        out = []
        for _ in range(k):
            w = rng.choice(WORDS)
            out.append(w if rng.random() > 0.1 else f"{w}_{rng.randint(0, 999)}()")
        return " ".join(out) + rng.choice([".", "?", "\n```python\nx = 1\n```", ":"])

    dialogues = []
    for _ in range(n):
        d = [{"role": "system", "content": text(rng.randint(0, 8))}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 4)):
            d += [
                {"role": "user", "content": text(rng.randint(5, 40))},
                {"role": "assistant", "content": text(rng.randint(10, 120))},
            ]
        dialogues.append(d)
    return dialogues


def train_tokenizer(dialogues, vocab_size=49152):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m["content"] for d in dialogues[:5000] for m in d]
    # extra random identifiers so the vocabulary really reaches ~49k entries
    rng = random.Random(1)
    corpus += [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(3, 12))) for _ in range(200_000)
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return prepare_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>"))


def naive(dialogues, tok, max_length):
    """Tokenize each dialogue, then re-tokenize prefixes to find where each reply starts and ends."""
    rows = []
    for d in dialogues:
        ids = tok(render(d), add_special_tokens=False)["input_ids"]
        labels = [IGNORE_INDEX] * len(ids)
        for k, m in enumerate(d):
            if m["role"] != "assistant":
                continue
            start = len(tok(render(d[:k]) + "<|assistant|>\n", add_special_tokens=False)["input_ids"])
            end = len(tok(render(d[: k + 1]).rstrip("\n"), add_special_tokens=False)["input_ids"])
            labels[start:end] = ids[start:end]
        rows.append({"input_ids": ids[:max_length], "labels": labels[:max_length]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogues", type=int, default=20_000)
    ap.add_argument("--block", type=int, default=1024)
    args = ap.parse_args()
    import datasets

    datasets.disable_progress_bars()
    dialogues = synth(args.dialogues)
    t = time.perf_counter()
    tok = train_tokenizer(dialogues)
    print(f"tokenizer: {len(tok)} tokens (trained in {time.perf_counter() - t:.1f}s); cores: {os.cpu_count()}")
    ds = datasets.Dataset.from_dict({"messages": dialogues})

    t = time.perf_counter()
    base = naive(dialogues, tok, args.block)
    t_naive = time.perf_counter() - t

    t = time.perf_counter()
    ours, stats = tokenize_dataset(ds, tok, max_length=args.block, truncation="cut")
    t_tok = time.perf_counter() - t
    packed, pstats = pack_dataset(ours, args.block)
    t_ours = time.perf_counter() - t

    sample = range(0, len(base), max(1, len(base) // 500))
    same = all(base[i]["input_ids"] == ours[i]["input_ids"] and base[i]["labels"] == ours[i]["labels"] for i in sample)
    n_tok = stats["tokens"]
    print(f"masks identical to the naive baseline on {len(sample)} sampled dialogues: {same}")
    print(f"{'':24}{'dialogues/s':>14}{'tokens/s':>14}{'seconds':>10}")
    print(f"{'naive (re-tokenize)':24}{len(dialogues) / t_naive:14,.0f}{n_tok / t_naive:14,.0f}{t_naive:10.2f}")
    print(f"{'starchat tokenize':24}{len(dialogues) / t_tok:14,.0f}{n_tok / t_tok:14,.0f}{t_tok:10.2f}")
    print(f"{'starchat tokenize+pack':24}{len(dialogues) / t_ours:14,.0f}{n_tok / t_ours:14,.0f}{t_ours:10.2f}")
    print(f"speed-up (tokenize+mask+pack vs naive tokenize+mask): {t_naive / t_ours:.2f}x")
    print(
        f"packing at block {args.block}: {pstats['rows']} rows, efficiency {pstats['packing_efficiency']:.2%} "
        f"(lower bound on rows: {-(-n_tok // args.block)})"
    )
    samples_efficiency(args.block, tok)


def samples_efficiency(block: int, tok) -> None:
    """Packing efficiency on the bundled samples (every format, no dedup, train and test together)."""
    import datasets

    from starchat.data.readers import read_source

    samples = Path(__file__).resolve().parents[1] / "tests" / "data" / "samples"
    msgs = [ex.messages for ex in read_source(str(samples))]
    ds, st = tokenize_dataset(datasets.Dataset.from_dict({"messages": msgs}), tok, max_length=block)
    _, p = pack_dataset(ds, block)
    print(
        f"bundled samples at block {block}: {st['tokens']} tokens in {p['rows']} rows, "
        f"efficiency {p['packing_efficiency']:.2%} (lower bound on rows: {-(-st['tokens'] // block)})"
    )


if __name__ == "__main__":
    main()
