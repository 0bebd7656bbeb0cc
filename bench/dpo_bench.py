"""DPO throughput: `starchat train` (method dpo) against a plain TRL DPOTrainer script at equal settings.

Same tiny GPT-BigCode and tokenizer as bench/train_bench.py, same pairs (a documented stdlib function as
the chosen reply, the same function cut to its first half as the rejected one), same batch size,
learning rate, beta, reference (a frozen copy of the starting model), fp32 and no activation
checkpointing; one epoch each on this machine's CPU. Tokens/s counts the non-pad tokens each side
feeds its policy (prompt + chosen and prompt + rejected per pair). Also: starchat with
`dpo.reference: precomputed`, whose time includes the reference pass done before training, and TRL
with the model's attention dropout off (TRL's disable_dropout misses it; starchat turns it off).
Run: `PYTHONPATH=src python bench/dpo_bench.py [--pairs 96] [--repeats 2]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from train_bench import make_tokenizer_and_model  # noqa: E402


def make_pairs(rows: list[dict]) -> list[dict]:
    """Preference rows from from-code dialogues: the whole function is chosen, its first half rejected."""
    pairs = []
    for r in rows:
        user, reply = r["messages"][0], r["messages"][1]["content"]
        lines = reply.splitlines()
        cut = "\n".join(lines[: max(1, len(lines) // 2)])
        if cut != reply:
            pairs.append(
                {
                    "prompt": [user],
                    "chosen": [{"role": "assistant", "content": reply}],
                    "rejected": [{"role": "assistant", "content": cut}],
                }
            )
    return pairs


def _pair_tokens(ds) -> int:
    return sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]))


def run_starchat(model_dir, data_dir, work, args, reference: str) -> tuple[float, int]:
    from starchat.train.config import load_config
    from starchat.train.run import build

    cfg = load_config(
        None,
        {
            "method": "dpo",
            "model.name_or_path": str(model_dir),
            "data.dataset": str(data_dir),
            "data.test_split": "",
            "dpo.beta": 0.1,
            "dpo.reference": reference,
            "dpo.max_length": args.max_length,
            "dpo.max_prompt_length": args.max_length // 2,
            "dpo.truncation": "cut",
            "training.output_dir": str(work / f"starchat-{reference}"),
            "training.num_train_epochs": 1,
            "training.per_device_train_batch_size": args.batch_size,
            "training.learning_rate": 1e-5,
            "training.save_strategy": "no",
            "training.eval_strategy": "no",
            "training.load_best_model_at_end": False,
            "training.logging_steps": 1000,
            "training.use_cpu": True,
            "training.disable_tqdm": True,
            "training.overwrite": True,
            "training.warmup_ratio": 0.0,
        },
    )
    t0 = time.perf_counter()
    trainer, *_ = build(cfg)
    if reference == "model":  # building loads and tokenizes only; the precomputed reference pass is in build
        t0 = time.perf_counter()
    trainer.train()
    tokens = _pair_tokens(trainer.train_dataset)
    return tokens / (time.perf_counter() - t0), tokens


def run_trl(model_dir, data_dir, work, args, attention_dropout: bool = True) -> tuple[float, int]:
    """The plain TRL script a user would write: DPOTrainer on the conversational pairs.

    ``attention_dropout=False`` also zeroes the model's attention-dropout rate, which TRL's
    disable_dropout leaves on and starchat turns off: it shows how much of the difference that is.
    """
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **({} if attention_dropout else {"attn_pdrop": 0.0}))
    train = datasets.load_from_disk(str(data_dir))["train"]
    cfg = DPOConfig(
        output_dir=str(work / "trl"),
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-5,
        beta=0.1,
        max_length=args.max_length,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1000,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=42,
        lr_scheduler_type="cosine",
        warmup_steps=0.0,
        # Equal settings: TRL turns on bf16 and activation checkpointing by default.
        bf16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
    )
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=train, processing_class=tok)
    tokens = _pair_tokens(trainer.train_dataset)
    t0 = time.perf_counter()
    trainer.train()
    return tokens / (time.perf_counter() - t0), tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is reported")
    args = p.parse_args()

    import datasets
    import torch

    from starchat.data.from_code import FromCodeOptions, collect

    torch.manual_seed(0)
    rows, _ = collect(["stdlib"], FromCodeOptions(max_functions=args.pairs * 2, max_chars=1200))
    pairs = make_pairs(rows)[: args.pairs]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "pairs"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(pairs)}).save_to_disk(str(data_dir))
        _, model_dir = make_tokenizer_and_model(rows, work, args.n_embd)
        results: dict[str, tuple] = {}
        runs = (
            ("trl", lambda: run_trl(model_dir, data_dir, work, args)),
            ("trl_no_attn_dropout", lambda: run_trl(model_dir, data_dir, work, args, attention_dropout=False)),
            ("starchat", lambda: run_starchat(model_dir, data_dir, work, args, "model")),
            ("starchat_precomputed", lambda: run_starchat(model_dir, data_dir, work, args, "precomputed")),
        )
        # Interleaved repeats, best of each: one-time costs and a shared CPU's drifting load favour no side.
        for _ in range(args.repeats):
            for name, fn in runs:
                r = fn()
                if name not in results or r[0] > results[name][0]:
                    results[name] = r
    base = results["trl"][0]
    print(
        f"\n{len(pairs)} pairs, batch {args.batch_size}, max_length {args.max_length}, CPU threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'run':<22}{'tokens':>9}{'tokens/s':>11}{'vs TRL':>9}")
    for name, (tps, tokens) in results.items():
        print(f"{name:<22}{tokens:>9}{tps:>11.0f}{tps / base:>8.2f}x")
    print(f"starchat train (method dpo) vs plain TRL DPOTrainer: {results['starchat'][0] / base:.2f}x")


if __name__ == "__main__":
    main()
