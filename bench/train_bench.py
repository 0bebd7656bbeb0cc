"""Training throughput: `starchat train` (unpacked and packed) against a plain TRL SFTTrainer script.

Same tiny GPT-BigCode, same tokenizer, same dialogues (documented stdlib functions), same batch
size, learning rate and number of dialogues; one epoch each, on this machine's CPU. Prints tokens
per second of real (non-pad) tokens, the ratios against TRL, and the fraction of non-pad tokens in
the batches. Run: `PYTHONPATH=src python bench/train_bench.py [--dialogues 96]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tokenizer_and_model(rows, work: Path, n_embd: int, **config):
    """A byte-level BPE trained on the dialogues plus a random GPT-BigCode (4 layers unless ``config`` says)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, PreTrainedTokenizerFast

    from starchat.templates import prepare_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((m["content"] for r in rows for m in r["messages"]), trainer)
    hf = prepare_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>"))
    config = {"vocab_size": len(hf), "n_positions": 1024, "n_layer": 4, "n_head": 4, **config}
    cfg = GPTBigCodeConfig(n_embd=n_embd, bos_token_id=hf.eos_token_id, eos_token_id=hf.eos_token_id,
                           pad_token_id=hf.pad_token_id, **config)
    model_dir = work / "model"
    GPTBigCodeForCausalLM(cfg).save_pretrained(model_dir)
    hf.save_pretrained(model_dir)
    return hf, model_dir


def nonpad_fraction(ds, collate, batch_size: int) -> float:
    real = total = 0
    for i in range(0, len(ds), batch_size):
        batch = collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))])
        real += sum(len(ds[j]["input_ids"]) for j in range(i, min(i + batch_size, len(ds))))
        total += batch["input_ids"].numel()
    return real / total


def run_starchat(model_dir, data_dir, work, packing: bool, args) -> tuple[float, int, float]:
    from starchat.train.config import load_config
    from starchat.train.data import collator
    from starchat.train.run import build

    cfg = load_config(None, {
        "model.name_or_path": str(model_dir), "data.dataset": str(data_dir), "data.test_split": "",
        "data.max_length": args.max_length, "data.packing": packing, "data.block_size": args.max_length,
        "training.output_dir": str(work / f"starchat-{packing}"), "training.num_train_epochs": 1,
        "training.per_device_train_batch_size": args.batch_size, "training.learning_rate": 1e-4,
        "training.save_strategy": "no", "training.eval_strategy": "no", "training.load_best_model_at_end": False,
        "training.logging_steps": 1000, "training.use_cpu": True, "training.disable_tqdm": True,
        "training.overwrite": True, "training.warmup_ratio": 0.0})
    trainer, tok, stats, _ = build(cfg)
    tokens = stats["train_tokenize"]["tokens"]
    frac = nonpad_fraction(trainer.train_dataset, collator(cfg.data, tok), args.batch_size)
    t0 = time.perf_counter()
    trainer.train()
    return tokens / (time.perf_counter() - t0), tokens, frac


def run_trl(model_dir, data_dir, work, args) -> tuple[float, int, float]:
    """The plain TRL script a user would write: SFTTrainer on the messages, loss on assistant tokens."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    train = datasets.load_from_disk(str(data_dir))["train"].select_columns(["messages"])
    cfg = SFTConfig(output_dir=str(work / "trl"), num_train_epochs=1, per_device_train_batch_size=args.batch_size,
                    learning_rate=1e-4, max_length=args.max_length, packing=False, assistant_only_loss=True,
                    save_strategy="no", eval_strategy="no", logging_steps=1000, report_to="none",
                    use_cpu=True, disable_tqdm=True, seed=42,
                    # Equal settings: TRL turns on bf16 and activation checkpointing by default; starchat
                    # trains in fp32 without recomputation here.
                    bf16=False, gradient_checkpointing=False, activation_checkpointing=False)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train, processing_class=tok)
    ds = trainer.train_dataset
    tokens = sum(len(x) for x in ds["input_ids"])
    frac = nonpad_fraction(ds, trainer.data_collator, args.batch_size)
    t0 = time.perf_counter()
    trainer.train()
    return tokens / (time.perf_counter() - t0), tokens, frac


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dialogues", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is reported")
    args = p.parse_args()

    import datasets
    import torch

    from starchat.data.from_code import FromCodeOptions, collect

    torch.manual_seed(0)
    rows, _ = collect(["stdlib"], FromCodeOptions(max_functions=args.dialogues, max_chars=1500))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        msgs = [{"messages": r["messages"]} for r in rows]
        datasets.DatasetDict({"train": datasets.Dataset.from_list(msgs)}).save_to_disk(str(data_dir))
        _, model_dir = make_tokenizer_and_model(rows, work, args.n_embd)
        results: dict[str, tuple] = {}
        runs = (("trl", lambda: run_trl(model_dir, data_dir, work, args)),
                ("starchat", lambda: run_starchat(model_dir, data_dir, work, False, args)),
                ("starchat_packed", lambda: run_starchat(model_dir, data_dir, work, True, args)))
        # Interleaved repeats, best of each: the first run in a process pays one-time costs, and a
        # shared CPU's load drifts; alternating keeps both from favouring one side.
        for _ in range(args.repeats):
            for name, fn in runs:
                r = fn()
                if name not in results or r[0] > results[name][0]:
                    results[name] = r
    base = results["trl"][0]
    print(f"\n{len(rows)} dialogues, batch {args.batch_size}, max_length {args.max_length}, CPU threads "
          f"{torch.get_num_threads()}")
    print(f"{'run':<18}{'tokens':>9}{'tokens/s':>11}{'vs TRL':>9}{'non-pad':>9}")
    for name, (tps, tokens, frac) in results.items():
        print(f"{name:<18}{tokens:>9}{tps:>11.0f}{tps / base:>8.2f}x{frac:>9.1%}")
    print(f"packing speed-up over unpacked starchat: {results['starchat_packed'][0] / results['starchat'][0]:.2f}x")


if __name__ == "__main__":
    main()
