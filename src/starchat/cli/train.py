"""`starchat train CONFIG.yaml [--section.key value ...]`: parse, maybe re-launch under accelerate, train."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap

# Short forms accepted on the command line for the most used keys.
ALIASES = {
    k: f"training.{k}"
    for k in (
        "overwrite",
        "accelerate_config",
        "output_dir",
        "num_processes",
        "num_machines",
        "machine_rank",
        "main_process_ip",
        "main_process_port",
    )
}


def _fields_help() -> str:
    from starchat.train.config import field_docs

    lines, section = [], None
    for key, tp, default, doc in field_docs():
        s = key.split(".")[0]
        if s != section:
            section = s
            lines.append(f"\n{s}:")
        lines.append(f"  --{key} {tp} (default: {default!r})")
        lines += textwrap.wrap(doc, 100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def register(sub) -> None:
    from starchat.options import RawDescriptionHelpFormatter
    from starchat.train.config import METHODS, SECTIONS

    wrap = "\n".join  # the description and epilog are kept as written (the key list is laid out by hand)
    p = sub.add_parser(
        "train",
        help="fine-tune a model on dialogues, or DPO on preference pairs (1 CPU to N GPUs)",
        formatter_class=RawDescriptionHelpFormatter,
        description=wrap(
            textwrap.wrap(
                "Fine-tune a base model as a recipe says. Every recipe key can be overridden as --section.key VALUE "
                "(booleans: true/false; lists: comma-separated). Rerunning the same command resumes from the last "
                "complete checkpoint.",
                100,
                break_on_hyphens=False,
            )
        ),
        epilog=wrap(
            textwrap.wrap(
                "shorthands: --overwrite, --accelerate-config ddp|zero3|fsdp, --output-dir DIR, --num-processes N (all "
                "machines), and for a multi-node run, on each machine: --num-machines N --machine-rank R "
                "--main-process-ip ADDR [--main-process-port P]",
                100,
                break_on_hyphens=False,
            )
        )
        + "\n\nconfiguration keys:"
        + _fields_help(),
    )
    p.add_argument(
        "config",
        metavar="CONFIG.yaml",
        help=f"recipe YAML: method ({' or '.join(METHODS)}) and sections {', '.join(SECTIONS)}",
    )
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="--section.key VALUE pairs")
    p.set_defaults(func=_train)


def _console_logging() -> None:
    """starchat's own warnings (data left out, a model that does not stop) as loud lines on stderr, and its
    progress notes (building a dataset) plainly; other libraries' loggers are left as they are."""
    log = logging.getLogger("starchat")
    if any(getattr(h, "_starchat_console", False) for h in log.handlers):
        return
    handler = _StderrHandler()
    handler._starchat_console = True
    handler.setFormatter(_LevelPrefix())
    log.addHandler(handler)
    log.setLevel(logging.INFO)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a caller may have replaced it since the first run
    installed the handler: an embedding program, a test's capture), never to a stream closed since."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always answers sys.stderr
        pass


class _LevelPrefix(logging.Formatter):
    def format(self, record):
        text = super().format(record)
        return f"WARNING: {text}" if record.levelno >= 30 else text


def _train(args) -> int:
    from starchat.train.config import load_config, parse_overrides

    _console_logging()
    from starchat.train.launch import already_launched, relaunch

    overrides = {ALIASES.get(k, k): v for k, v in parse_overrides(args.overrides).items()}
    cfg = load_config(args.config, overrides)
    from starchat.train.run import finished

    if finished(cfg):  # before launching anything: a finished run is left as it is
        print(
            f"training already finished: {cfg.training.output_dir} holds this run's final model; nothing to do "
            "(--overwrite trains it again)"
        )
        return 0
    if cfg.training.accelerate_config and not already_launched():
        argv = [args.config]
        for k, v in overrides.items():
            argv += [f"--{k}", str(v)]
        return relaunch(cfg.training, argv)
    from starchat.train import train
    from starchat.train.run import is_main_process

    out = train(cfg)
    _leave_process_group()
    if is_main_process():  # every rank returns here; one line is enough
        print(f"model written to {out}")
    if already_launched():
        _exit_rank()
    return 0


def _exit_rank() -> None:
    """A launched rank whose run is finished and written leaves without tearing the interpreter down.

    Closing the process group was not enough: a ZeRO-3 rank still died at exit with SIGABRT ("terminate
    called without an active exception", a native thread of gloo/DeepSpeed destroyed while joinable),
    which failed a finished run. Everything is on disk by now; logs and streams are flushed first.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _leave_process_group() -> None:
    """Wait for every rank (rank 0 writes the final files last), then close the process group.

    Without it a rank sometimes died at exit with SIGABRT ("terminate called without an active
    exception": gloo's threads still running while the interpreter tore down), failing a finished run.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
