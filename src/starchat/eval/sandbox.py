"""Run untrusted programs against trusted checks: own process, limits, no network, and a verdict it can't forge.

How a program is judged
-----------------------
Each program runs in its own sandboxed Python process (``_child.py``). The problem's test code
(HumanEval's ``check(candidate)``) never runs there: it runs in the harness, in the worker thread,
with ``candidate`` bound to a proxy that sends the arguments to the sandbox and gets the result back
as plain data (exact ``int/float/str/bool/None/list/tuple/dict/set/bytes``, nothing else). A sample
passes only when ``check`` returns normally in the harness. So:

* ``sys.exit(0)``, ``os._exit(0)``, a crash or a kill before or during the tests: the proxy sees the
  process gone, the check raises, the sample fails. Exit codes mean nothing here.
* Monkeypatching ``check``, ``assert``, ``AssertionError``, builtins or modules: it changes the sandbox
  process only; the checker lives in another process that the program cannot reach.
* Results with a forged ``__eq__`` (or any object that is not plain data) cannot cross the wire.
* Helper functions the tests use (``poly``, ``encode_cyclic``...) come from the problem's prompt, run
  on the harness side, so a program cannot redefine them either.
This replaces the usual "print a nonce after the checks" scheme: any secret inside the program's own
process can be read by the program (frames, gc, /proc/self/mem), so the only channel a program
cannot forge is the one where it never runs the judge at all. The one thing it can do is compute
correct answers, which is solving the problem.

What the sandbox contains (mode ``namespaces``, the default where the kernel allows it)
---------------------------------------------------------------------------------------
* ``unshare --net --mount --pid --fork --kill-child --mount-proc`` (plus ``--user --map-root-user`` when
  not root): no network (an empty net namespace, loopback down); a pid namespace whose init is the
  program, so killing it (timeout) kills every process it started; its own /proc.
* The whole filesystem is remounted read-only (``mount_setattr(AT_RECURSIVE)``); /tmp, /dev/shm and
  /var/tmp are fresh size-capped tmpfs mounts, the working directory is /tmp/work, and all of it
  vanishes with the namespace. Writing, deleting or ``os.system("rm ...")`` outside it fails (EROFS).
* As root (CI): the program then runs as a fresh random unprivileged uid, so RLIMIT_NPROC binds
  (root ignores it), root-owned files are out of reach, and no two runs share a process count. Not
  root: a user namespace, with every capability and the bounding set dropped.
* RLIMITs: CPU seconds, address space, file size, open files, process count, no core dumps; a
  wall-clock timeout; ``PR_SET_NO_NEW_PRIVS``; the environment is replaced by a minimal one (no
  secrets); the interpreter runs ``-I`` (ignores PYTHON* variables and user site-packages).
* The harness survives anything: replies are size-capped and decoded defensively, output is
  drained into a bounded buffer, and every wait has a deadline.

Mode ``basic`` (fallback when ``unshare`` is missing or namespaces are refused; a warning says so):
own process and session, RLIMITs, a fresh host temp dir removed afterwards, scrubbed environment,
and a random unprivileged uid when root. Missing there: network isolation, a read-only filesystem
(the program can write where its uid may, e.g. /tmp), and killing escaped daemons (only its
process group is killed).

Not covered in any mode: kernel exploits, side channels, CPU time of other tenants (the wall
clock bounds it), and programs that read world-readable files (the filesystem is visible, read-only).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

from starchat.eval import _child

CHILD_SOURCE = Path(_child.__file__).read_text(encoding="utf-8")
OUTPUT_KEEP = 4096  # bytes of the program's stdout/stderr kept for the report
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclasses.dataclass
class Limits:
    """Resource limits for one program."""

    timeout: float = 10.0  # wall seconds for loading the program and all calls
    cpu_seconds: int = 10
    memory_mb: int = 1024  # address space; Python itself needs ~100 MB
    file_size_mb: int = 16
    tmpfs_mb: int = 64  # size of the private /tmp (namespaces mode)
    max_processes: int = 32  # threads count too
    max_open_files: int = 256

    def rlimits(self) -> dict[str, int]:
        return {"RLIMIT_CPU": self.cpu_seconds, "RLIMIT_AS": self.memory_mb << 20,
                "RLIMIT_FSIZE": self.file_size_mb << 20, "RLIMIT_NOFILE": self.max_open_files,
                "RLIMIT_NPROC": self.max_processes, "RLIMIT_CORE": 0}


@dataclasses.dataclass
class Result:
    """The verdict on one program."""

    passed: bool
    status: str  # passed | failed | timeout | load_error | crashed | sandbox_error
    error: str = ""
    output: str = ""  # the first bytes the program printed
    seconds: float = 0.0


class CheckFailed(Exception):
    """Raised inside the checker when the sandboxed program cannot answer a call."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Job:
    """A program, the name of its function under test, and trusted test code calling ``check``."""

    program: str
    entry_point: str
    test: str  # defines check(candidate)
    helpers: str = ""  # trusted code run on the harness side before the test (e.g. the prompt)


# ---- choosing the isolation mode --------------------------------------------------------------------

_MODE: dict[str, Any] = {}
_MODE_LOCK = threading.Lock()


def _namespace_prefix() -> list[str]:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    flags = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user"] + flags
    return [unshare, *flags, "--"]


def sandbox_mode(force: str | None = None) -> dict[str, Any]:
    """The strongest mode that works here, probed once: {'name', 'warning'}."""
    with _MODE_LOCK:
        if force:
            return {"name": force, "warning": ""}
        if not _MODE:
            _MODE.update(_probe())
            if _MODE["warning"]:
                warnings.warn(_MODE["warning"], RuntimeWarning, stacklevel=2)
        return dict(_MODE)


def _probe() -> dict[str, Any]:
    job = Job("def f():\n    return 1\n", "f", "def check(candidate):\n    assert candidate() == 1\n")
    if os.environ.get("STARCHAT_SANDBOX") != "basic" and shutil.which("unshare"):
        res = _run(job, Limits(timeout=20), "namespaces")
        if res.passed:
            return {"name": "namespaces", "warning": ""}
        why = f"{res.status}: {res.error} {res.output[-300:]}".strip()
    else:
        why = "unshare (util-linux) not found" if not shutil.which("unshare") else "STARCHAT_SANDBOX=basic"
    return {"name": "basic", "warning": f"sandbox: namespaces unavailable ({why}); running in basic mode "
                                         "without network isolation or a read-only filesystem"}


# ---- running one job --------------------------------------------------------------------------------

def run_job(job: Job, limits: Limits | None = None, mode: str | None = None) -> Result:
    """Run one program in the sandbox and judge it with the trusted checker. Never raises for the
    program's behaviour; only a broken sandbox itself reports status 'sandbox_error'."""
    return _run(job, limits or Limits(), mode or sandbox_mode()["name"])


def _sandbox_uid() -> int | None:
    # A fresh uid per program: RLIMIT_NPROC counts per uid, so runs never share a count.
    return random.randrange(1_000_000, 2_000_000_000) if os.geteuid() == 0 else None


def _run(job: Job, limits: Limits, mode: str) -> Result:
    start = time.monotonic()
    deadline = start + limits.timeout
    uid = _sandbox_uid()
    cfg: dict[str, Any] = {"program": job.program, "entry_point": job.entry_point, "limits": limits.rlimits(),
                           "uid": uid, "tmpfs_mb": limits.tmpfs_mb}
    hostdir = None
    if mode == "namespaces":
        cmd = _namespace_prefix()
        cfg.update(isolate_fs=True, drop_caps=os.geteuid() != 0, expose=_interpreter_dirs() if uid else [])
    else:
        cmd = []
        hostdir = tempfile.mkdtemp(prefix="starchat-sandbox-")
        if uid is not None:
            os.chown(hostdir, uid, uid)
        cfg["workdir"] = hostdir
        if os.geteuid() != 0:  # the count includes all of this user's processes
            cfg["limits"]["RLIMIT_NPROC"] += _count_own_processes()
    workdir = hostdir or "/tmp/work"
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    cmd += [sys.executable, "-I", "-c", CHILD_SOURCE]
    resp_r, resp_w = os.pipe()
    cmd.append(str(resp_w))  # the child replies on this inherited fd
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                pass_fds=(resp_w,), env=env, cwd=hostdir or "/", start_new_session=True)
    except OSError as e:
        os.close(resp_r), os.close(resp_w)
        _cleanup(None, hostdir)
        return Result(False, "sandbox_error", f"could not start the sandbox: {e}")
    os.close(resp_w)
    chan = _Channel(proc, resp_r, deadline)
    try:
        chan.send(cfg)
        result = _judge(job, chan)
    except CheckFailed as e:
        result = Result(False, e.status, str(e))
    finally:
        chan.close()
        _cleanup(proc, hostdir)
    result.output = chan.output.decode("utf-8", "replace")
    result.seconds = time.monotonic() - start
    return result


def _interpreter_dirs() -> list[str]:
    """Directories the sandboxed interpreter reads: its prefixes and import path, resolved."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable),
            os.path.dirname(os.path.realpath(sys.executable)), *sys.path}
    return sorted({os.path.realpath(d) for d in dirs if d and os.path.isdir(d)})


def _count_own_processes() -> int:
    uid, n = os.getuid(), 0
    for p in Path("/proc").iterdir():
        try:
            n += p.name.isdigit() and p.stat().st_uid == uid
        except OSError:
            pass
    return n


def _cleanup(proc, hostdir):
    if proc is not None:
        for kill in (lambda: os.killpg(proc.pid, 9), proc.kill):
            try:
                kill()
            except OSError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    if hostdir:
        shutil.rmtree(hostdir, ignore_errors=True)


def _judge(job: Job, chan: "_Channel") -> Result:
    first = chan.recv()
    if "setup_error" in first:
        return Result(False, "sandbox_error", first["setup_error"])
    if "load_error" in first:
        return Result(False, "load_error", first["load_error"])
    if not first.get("ready"):
        raise CheckFailed("crashed", "the program sent an unexpected message")

    def candidate(*args, **kwargs):
        try:
            chan.send({"args": _child.encode(list(args)), "kwargs": _child.encode(kwargs)})
        except TypeError as e:
            raise CheckFailed("sandbox_error", f"test arguments are not plain data: {e}") from None
        reply = chan.recv()
        if "ok" in reply:
            return _decode(reply["ok"])
        if "exc" in reply:
            raise _exception(reply.get("exc"), reply.get("msg"))
        raise CheckFailed("crashed", "the program sent an unexpected reply")

    namespace: dict[str, Any] = {"__name__": "__check__"}
    try:
        exec(compile(job.helpers, "helpers.py", "exec"), namespace)  # the prompt: trusted helpers
    except Exception:  # noqa: BLE001  (a prompt with no body can still fail to define helpers)
        pass
    namespace[job.entry_point] = candidate  # tests sometimes call the function by name
    try:
        exec(compile(job.test, "test.py", "exec"), namespace)
        namespace["check"](candidate)
    except CheckFailed:
        raise
    except AssertionError as e:
        return Result(False, "failed", f"AssertionError: {e}"[:2000] if str(e) else "AssertionError")
    except Exception as e:  # noqa: BLE001
        return Result(False, "failed", f"{type(e).__name__}: {e}"[:2000])
    return Result(True, "passed")


def _decode(value):
    try:
        return _child.decode(value)
    except (ValueError, TypeError, RecursionError, AttributeError) as e:
        raise CheckFailed("crashed", f"malformed result: {e}") from None


def _exception(name, msg) -> Exception:
    import builtins

    cls = getattr(builtins, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)) or cls is CheckFailed:
        cls = RuntimeError
    return cls(f"{msg} (raised by the program as {name})")


class _Channel:
    """Framed messages to and from the sandbox with a hard deadline; drains the program's output."""

    def __init__(self, proc: subprocess.Popen, resp_fd: int, deadline: float):
        self.proc, self.fd, self.deadline = proc, resp_fd, deadline
        self.out_fd = proc.stdout.fileno()
        self.output = b""
        self.buf = b""

    def send(self, obj) -> None:
        data = json.dumps(obj).encode()
        try:
            self._write(struct.pack("<Q", len(data)) + data)
        except (BrokenPipeError, OSError):
            raise CheckFailed("crashed", "the program exited before the tests finished") from None

    def _write(self, data: bytes) -> None:
        fd = self.proc.stdin.fileno()
        view = memoryview(data)
        while view:
            if not select.select([], [fd], [], self._left())[1]:
                raise CheckFailed("timeout", "timed out")
            view = view[os.write(fd, view[:65536]):]

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed("timeout", "timed out")
        return left

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            fds = [self.fd] + ([self.out_fd] if self.out_fd is not None else [])
            ready = select.select(fds, [], [], self._left())[0]
            if not ready:
                raise CheckFailed("timeout", "timed out")
            if self.out_fd in ready:
                chunk = os.read(self.out_fd, 65536)
                if not chunk:
                    self.out_fd = None
                elif len(self.output) < OUTPUT_KEEP:
                    self.output += chunk[: OUTPUT_KEEP - len(self.output)]
            if self.fd in ready:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    raise CheckFailed("crashed", "the program exited before the tests finished"
                                      + _exit_note(self.proc))
                self.buf += chunk

    def recv(self):
        self._fill(8)
        (n,) = struct.unpack("<Q", self.buf[:8])
        if n > _child.MAX_MESSAGE:
            raise CheckFailed("crashed", f"the program sent a {n}-byte reply (limit {_child.MAX_MESSAGE})")
        self._fill(8 + n)
        data, self.buf = self.buf[8:8 + n], self.buf[8 + n:]
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise CheckFailed("crashed", "the program sent a malformed reply") from None

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        os.close(self.fd)


def _exit_note(proc: subprocess.Popen) -> str:
    try:
        rc = proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        return ""
    return f" (exit status {rc})"


# ---- many jobs --------------------------------------------------------------------------------------

def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_many(jobs: Iterable[Job], limits: Limits | None = None, workers: int | None = None,
             on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
    """Run jobs on ``workers`` threads (each drives one sandboxed process); results in input order.
    ``on_result(index, result)`` is called from the calling thread as each one finishes."""
    jobs = list(jobs)
    limits = limits or Limits()
    mode = sandbox_mode()["name"]
    results: list[Result | None] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        futures = {pool.submit(run_job, job, limits, mode): i for i, job in enumerate(jobs)}
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_result:
                on_result(i, results[i])
    return results  # type: ignore[return-value]
