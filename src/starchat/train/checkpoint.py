"""Checkpoints that are only trusted once complete, and the guard against mixing two runs in one directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from starchat.errors import StarchatError
from starchat.fsio import write_text_atomic

COMPLETE_MARKER = "starchat_checkpoint_complete"
RUN_FILE = "starchat_run.json"
FINISHED_MARKER = "starchat_run_finished"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def mark_complete(ckpt: Path, step: int) -> None:
    """Write the marker last: every file of the checkpoint is flushed to disk before it exists."""
    for f in ckpt.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    tmp = ckpt / (COMPLETE_MARKER + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"step": step}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, ckpt / COMPLETE_MARKER)
    _fsync_dir(ckpt)


def checkpoints(run_dir: Path) -> list[tuple[int, Path, bool]]:
    """(step, path, complete) for every checkpoint-N under run_dir, by step."""
    out = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = _CKPT.match(p.name)
            if m and p.is_dir():
                out.append((int(m.group(1)), p, (p / COMPLETE_MARKER).is_file()))
    return sorted(out)


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    done = [p for _, p, ok in checkpoints(run_dir) if ok]
    return done[-1] if done else None


def remove_incomplete(run_dir: Path) -> list[Path]:
    """Delete checkpoints a kill or a full disk left half written (no marker); they are never resumed from."""
    removed = []
    for _, p, ok in checkpoints(run_dir):
        if not ok:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def run_fingerprint(cfg_dict: dict) -> str:
    """What makes two runs 'the same run': everything but bookkeeping that may change on a rerun."""
    d = json.loads(json.dumps(cfg_dict))
    from starchat.train.methods import METHODS

    method = d.get("method", "sft")
    # Other methods' sections do not change this run, so adding a method keeps every run's fingerprint.
    for m in METHODS.values():
        if m.section and m.name != method:
            d.pop(m.section, None)
    if method == "sft":  # runs from before `method` existed stay the same run
        d.pop("method", None)
    if not d.get("data", {}).get("from_code_options", True):  # runs from before from_code_options too
        d["data"].pop("from_code_options")
    t = d.get("training", {})
    for k in (
        "overwrite",
        "resume",
        "disable_tqdm",
        "report_to",
        "logging_steps",
        "accelerate_config",
        "num_processes",
        "num_machines",
        "machine_rank",
        "main_process_ip",
        "main_process_port",
        "dataloader_num_workers",
        "hub_model_id",
    ):
        t.pop(k, None)
    data = d.get("data", {})
    if isinstance(data.get("fim"), dict) and not data["fim"].get("source"):  # runs from before data.fim existed
        data.pop("fim")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def claim_output_dir(output_dir: Path, cfg_dict: dict, overwrite: bool) -> bool:
    """Make output_dir ours. Returns True when it already holds this same run (so it may resume).

    A directory holding a different run (or files that are not a starchat run) is an error unless
    ``overwrite``, which empties it first (and so always starts afresh).
    """
    fp = run_fingerprint(cfg_dict)
    run_file = output_dir / RUN_FILE
    same = False
    # A directory holding only a run file never got to train (e.g. its data failed the checks): reuse it.
    if output_dir.exists() and any(p.name != RUN_FILE for p in output_dir.iterdir()):
        recorded = None
        if run_file.is_file():
            try:
                recorded = json.loads(run_file.read_text()).get("fingerprint")
            except (OSError, json.JSONDecodeError):
                recorded = None
        same = recorded == fp and not overwrite
        if not same:
            if not overwrite:
                what = "a different training run" if recorded else "files that are not a starchat training run"
                raise StarchatError(
                    f"training.output_dir: {output_dir} holds {what}; pick another directory, "
                    "or pass --overwrite (--training.overwrite true) to replace it"
                )
            shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not same:
        write_text_atomic(run_file, json.dumps({"fingerprint": fp, "config": cfg_dict}, indent=2) + "\n")
    return same


def wait_for_claim(output_dir: Path, cfg_dict: dict, timeout_s: float = 600.0) -> None:
    """On a rank other than the main one: wait until the main process has claimed output_dir for this run (its
    run file holds this run's fingerprint), so this rank writes nothing there (prepared pairs, locks) that the
    claim would take for a stranger's files. A main process that fails ends the launch, and this rank with it.

    Not covered: with --overwrite over a directory that already holds this same run, the run file matches
    before the main process has emptied the directory; that combination starts over on every rank anyway.
    """
    import time

    fp, run_file = run_fingerprint(cfg_dict), output_dir / RUN_FILE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads(run_file.read_text()).get("fingerprint") == fp:
                return
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    raise StarchatError(
        f"training.output_dir: {output_dir}: the main process did not claim it within "
        f"{timeout_s:.0f} s; see its error above"
    )


def mark_finished(output_dir: Path) -> None:
    """Record that output_dir holds the run's final model (written after every final file is in place)."""
    write_text_atomic(output_dir / FINISHED_MARKER, json.dumps({"finished": True}) + "\n")


def is_finished(output_dir: Path, cfg_dict: dict) -> bool:
    """True when output_dir holds the final model of this same run (same fingerprint, finished marker)."""
    if not (output_dir / FINISHED_MARKER).is_file():
        return False
    try:
        recorded = json.loads((output_dir / RUN_FILE).read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == run_fingerprint(cfg_dict)
