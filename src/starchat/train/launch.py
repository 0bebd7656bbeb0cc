"""Re-launch `starchat train` through `accelerate launch` with one of the accelerate configs shipped here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from starchat.errors import StarchatError

if TYPE_CHECKING:  # annotations only: config imports this module to check accelerate_config names
    from starchat.train.config import TrainingConfig

CONFIG_DIR = Path(__file__).parent / "accelerate_configs"
SHIPPED = ("ddp", "zero3", "fsdp")
# Set in the launched processes so they train instead of launching again.
LAUNCHED_ENV = "STARCHAT_ACCELERATE_LAUNCHED"


def resolve_accelerate_config(name: str) -> Path:
    """`ddp`, `zero3`, `fsdp` -> the YAML shipped in the package; anything else must be an existing file."""
    if name in SHIPPED:
        return CONFIG_DIR / f"{name}.yaml"
    path = Path(name)
    if path.is_file():
        return path
    raise StarchatError(
        f"training.accelerate_config: {name!r} is neither one of {list(SHIPPED)} nor an accelerate YAML file"
    )


def already_launched() -> bool:
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_command(t: TrainingConfig, train_argv: list[str]) -> list[str]:
    """The `accelerate launch ... -m starchat train ...` command line for this machine of the run."""
    # --mixed_precision beats the config file's (bf16 in every shipped one), so training.bf16: false means fp32.
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(resolve_accelerate_config(t.accelerate_config)),
        "--mixed_precision",
        t.mixed_precision,
    ]
    # accelerate counts the processes of all machines and starts num_processes / num_machines on each.
    num_processes = t.num_processes if t.num_processes is not None else _visible_gpus() * t.num_machines
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    if t.num_machines > 1:
        cmd += [
            "--num_machines",
            str(t.num_machines),
            "--machine_rank",
            str(t.machine_rank),
            "--main_process_ip",
            t.main_process_ip,
            "--main_process_port",
            str(t.main_process_port),
        ]
    return cmd + ["-m", "starchat", "train", *train_argv]


def relaunch(t: TrainingConfig, train_argv: list[str]) -> int:
    """Run the same training command under `accelerate launch`; returns its exit status."""
    cmd = launch_command(t, train_argv)
    kind = distributed_type(t.accelerate_config)
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise StarchatError(
            f"training.accelerate_config {t.accelerate_config!r} runs DeepSpeed, which is not "
            "installed: pip install 'starchat[gpu]' (or deepspeed)"
        )
    if not _visible_gpus():
        if kind == "FSDP":  # seen with accelerate 1.15: the distributed type becomes MULTI_CPU
            print(
                f"warning: no GPU here: accelerate runs the {t.accelerate_config} config as plain data parallel "
                "on the CPU (every process holds the whole model)",
                file=sys.stderr,
                flush=True,
            )
        elif kind == "DEEPSPEED":  # DeepSpeed's CPU accelerator: real ZeRO sharding over gloo
            print(
                f"note: no GPU here: DeepSpeed runs {t.accelerate_config} on the CPU (gloo), which checks a "
                "setup but is slow",
                file=sys.stderr,
                flush=True,
            )
    print("launching:", " ".join(cmd), file=sys.stderr, flush=True)
    env = dict(os.environ, **{LAUNCHED_ENV: "1"})
    return subprocess.call(cmd, env=env)


def distributed_type(config_name: str) -> str:
    """The accelerate YAML's distributed_type (MULTI_GPU, DEEPSPEED, FSDP, ...)."""
    import yaml

    path = resolve_accelerate_config(config_name)
    try:
        return str((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("distributed_type", "NO"))
    except yaml.YAMLError as e:
        raise StarchatError(f"training.accelerate_config: {path} is not valid YAML ({e})") from None


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch/CUDA means accelerate's own default
        return 0
