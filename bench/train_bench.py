"""Training throughput: packed `starchat train` against TRL's SFTTrainer with packing (its best configuration).

The anchor is TRL's `SFTTrainer` with ``packing=True`` (best-fit decreasing, which switches TRL to
padding-free batches: one flat row with restarting position_ids), ``assistant_only_loss=True``. Both get
the same tiny GPT-BigCode, tokenizer, dialogues (documented stdlib functions), rows per step (batch x
max_length = block_size tokens at most), learning rate and schedule (linear, no warm-up), fp32, no
activation checkpointing, seed; one epoch each on this machine's CPU, in interleaved rounds.

Reported: real (non-pad) tokens per second and the ratio starchat/TRL (target >= 1.0); what each had
trained at equal wall time (the shorter run's length); the mean training loss of the epoch and the
validation loss of both final models on the same held-out dialogues through `starchat eval loss`'s
code (they must agree within noise: the two train the same thing).

    PYTHONPATH=src python bench/train_bench.py [--dialogues 192] [--repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
LR = 1e-4


def make_tokenizer_and_model(rows, work: Path, n_embd: int, **config):
    """A byte-level BPE trained on the dialogues plus a random GPT-BigCode (4 layers unless ``config`` says)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, PreTrainedTokenizerFast

    from starchat.templates import prepare_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4000,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator((m["content"] for r in rows for m in r["messages"]), trainer)
    hf = prepare_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>"))
    config = {"vocab_size": len(hf), "n_positions": 1024, "n_layer": 4, "n_head": 4, **config}
    cfg = GPTBigCodeConfig(
        n_embd=n_embd,
        bos_token_id=hf.eos_token_id,
        eos_token_id=hf.eos_token_id,
        pad_token_id=hf.pad_token_id,
        **config,
    )
    model_dir = work / "model"
    GPTBigCodeForCausalLM(cfg).save_pretrained(model_dir)
    hf.save_pretrained(model_dir)
    return hf, model_dir


class Recorder:
    """Wraps a collator: counts the real tokens of every batch (the rows' own lengths, padding excluded)."""

    def __init__(self, collate):
        self.collate, self.real, self.total = collate, [], 0

    def __call__(self, features):
        batch = self.collate(features)
        self.real.append(sum(len(f["input_ids"]) for f in features))
        self.total += batch["input_ids"].numel()
        return batch


def timed_train(trainer, out: Path, tokenizer) -> dict:
    """Train one epoch, timing every optimizer step; save the final model to ``out`` for the loss check."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # one line per round is printed below instead of every log
    rec = Recorder(trainer.data_collator)
    trainer.data_collator = rec
    steps: list[tuple[float, float | None]] = []  # (seconds since start, that step's loss)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps.append((time.perf_counter() - t0, None))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and steps:
                steps[-1] = (steps[-1][0], float(logs["loss"]))

    trainer.add_callback(Clock())
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    real = sum(rec.real)
    return {
        "seconds": seconds,
        "tokens": real,
        "tok_s": real / seconds,
        "non_pad": real / max(1, rec.total),
        "steps": steps,
        "step_tokens": rec.real,
        "train_loss": float(result.training_loss),
    }


def run_starchat(model_dir, data_dir, work, args) -> dict:
    from starchat.train.config import load_config
    from starchat.train.run import build

    cfg = load_config(
        None,
        {
            "model.name_or_path": str(model_dir),
            "data.dataset": str(data_dir),
            "data.test_split": "",
            "data.max_length": args.max_length,
            "data.packing": True,
            "data.block_size": args.max_length,
            "training.output_dir": str(work / "starchat"),
            "training.num_train_epochs": 1,
            "training.per_device_train_batch_size": args.batch_size,
            "training.learning_rate": LR,
            "training.lr_scheduler_type": "linear",
            "training.warmup_ratio": 0.0,
            "training.save_strategy": "no",
            "training.eval_strategy": "no",
            "training.load_best_model_at_end": False,
            "training.logging_steps": 1,
            "training.use_cpu": True,
            "training.disable_tqdm": True,
            "training.overwrite": True,
        },
    )
    trainer, tok, _, _ = build(cfg)
    return timed_train(trainer, work / "starchat-final", tok)


def run_trl(model_dir, data_dir, work, args) -> dict:
    """The TRL script a user would write for packed SFT on conversations, loss on the assistant's tokens."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    train = datasets.load_from_disk(str(data_dir))["train"].select_columns(["messages"])
    cfg = SFTConfig(
        output_dir=str(work / "trl"),
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=args.max_length,
        packing=True,
        packing_strategy="bfd",
        assistant_only_loss=True,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=42,
        data_seed=42,
        # Equal settings: TRL turns on bf16 and activation checkpointing by default; starchat
        # trains in fp32 without recomputation here.
        bf16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train, processing_class=tok)
    assert trainer.padding_free, "TRL's bfd packing is expected to train padding-free"
    return timed_train(trainer, work / "trl-final", tok)


def at_time(run: dict, t: float) -> tuple[int, float | None]:
    """Tokens trained and the last logged step loss by ``t`` seconds into ``run``."""
    tokens, loss = 0, None
    for (sec, step_loss), n in zip(run["steps"], run["step_tokens"]):
        if sec > t:
            break
        tokens += n
        loss = step_loss if step_loss is not None else loss
    return tokens, loss


def heldout_loss(model_dir: Path, data_dir: Path) -> float:
    from starchat.eval.loss import LossConfig, eval_loss

    return eval_loss(LossConfig(model=str(model_dir), data=str(data_dir), split="test", batch_size=8, progress=False))[
        "loss"
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dialogues", type=int, default=192, help="training dialogues")
    p.add_argument("--heldout", type=int, default=48, help="held-out dialogues for the validation loss")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512, help="TRL's max_length = starchat's block_size")
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the fastest of each is reported")
    p.add_argument("--quick", action="store_true", help="48 dialogues, 1 round: checks the bench runs")
    args = p.parse_args()
    if args.quick:
        args.dialogues, args.heldout, args.repeats = 48, 16, 1

    import datasets
    import torch

    from starchat import threads
    from starchat.data.from_code import FromCodeOptions, collect

    threads.apply()  # the CLI's thread policy, for both sides
    torch.manual_seed(0)
    rows, _ = collect(["stdlib"], FromCodeOptions(max_functions=args.dialogues + args.heldout, max_chars=1500))
    msgs = [{"messages": r["messages"]} for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_list(msgs[: args.dialogues]),
                "test": datasets.Dataset.from_list(msgs[args.dialogues :]),
            }
        ).save_to_disk(str(data_dir))
        _, model_dir = make_tokenizer_and_model(rows[: args.dialogues], work, args.n_embd)
        results: dict[str, dict] = {}
        runs = (
            ("trl", lambda: run_trl(model_dir, data_dir, work, args)),
            ("starchat", lambda: run_starchat(model_dir, data_dir, work, args)),
        )
        # Interleaved rounds, fastest of each: the first run in a process pays one-time costs, and a
        # shared CPU's load drifts; alternating keeps both from favouring one side.
        for r in range(args.repeats):
            for name, fn in runs if r % 2 == 0 else runs[::-1]:
                res = fn()
                res["heldout_loss"] = heldout_loss(work / f"{name}-final", data_dir)
                print(
                    f"  round {r + 1} {name:<9}{res['tok_s']:8.0f} tok/s  {res['seconds']:6.1f} s  "
                    f"train loss {res['train_loss']:.4f}  held-out {res['heldout_loss']:.4f}",
                    flush=True,
                )
                if name not in results or res["tok_s"] > results[name]["tok_s"]:
                    results[name] = res
    ours, trl = results["starchat"], results["trl"]
    t_eq = min(ours["seconds"], trl["seconds"])
    print(
        f"\n{args.dialogues} dialogues (+{args.heldout} held out), batch {args.batch_size} x {args.max_length}, "
        f"lr {LR}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'run':<10}{'tokens':>8}{'steps':>7}{'seconds':>9}{'tok/s':>8}{'non-pad':>9}{'train loss':>12}"
        f"{'held-out':>10}"
    )
    for name, r in (("TRL", trl), ("starchat", ours)):
        print(
            f"{name:<10}{r['tokens']:>8}{len(r['steps']):>7}{r['seconds']:>9.1f}{r['tok_s']:>8.0f}"
            f"{r['non_pad']:>9.1%}{r['train_loss']:>12.4f}{r['heldout_loss']:>10.4f}"
        )
    (a_tok, a_loss), (b_tok, b_loss) = at_time(ours, t_eq), at_time(trl, t_eq)
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    print(
        f"at equal wall time ({t_eq:.1f} s): starchat {a_tok} tokens (step loss {fmt(a_loss)}), "
        f"TRL {b_tok} tokens (step loss {fmt(b_loss)})"
    )
    ratio = ours["tok_s"] / trl["tok_s"]
    print(
        f"starchat vs TRL (packing, padding-free): {ratio:.2f}x non-pad tokens/s "
        f"(target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'}); held-out loss difference "
        f"{ours['heldout_loss'] - trl['heldout_loss']:+.4f}"
    )


if __name__ == "__main__":
    main()
