"""Run untrusted programs and their problems' test code, each in a sandbox of its own; a verdict the program can't forge.

How a program is judged
-----------------------
Two sandboxed Python processes per program (``_child.py``), both contained as described below:
* the *program*: the model's code; it loads and then answers call requests with plain data;
* the *checker*: the problem's test code, which comes from the problems file (``--problems``,
  ``--prompts``: a file from the hub or a third party is code you run, so it is contained too). It runs
  the prompt (helpers like ``poly``), the ``test`` text and ``check(candidate)``, where ``candidate``
  sends each call's arguments out. evalplus's canonical solutions run here too.
The harness (this module) runs no problem-supplied code: it relays each call from the checker to the
program and the result back, as plain data only (exact ``int/float/str/bool/None/list/tuple/dict/set/
bytes``, checked on the way), and a sample passes only when the checker sends its verdict "passed"
after ``check`` returned normally. So:

* ``sys.exit(0)``, ``os._exit(0)``, a crash or a kill of the program before or during the tests: the
  harness sees its process gone and ends the run as ``crashed``; the checker never gets a reply, so
  test code that catches exceptions cannot swallow it. Exit codes mean nothing here.
* Monkeypatching ``check``, ``assert``, ``AssertionError``, builtins or modules: it changes the program's
  process only; the checker is another process, in its own namespaces, that the program cannot reach.
* Results with a forged ``__eq__`` (or any object that is not plain data) cannot cross the wire.
* Helper functions the tests use (``poly``, ``encode_cyclic``...) come from the problem's prompt, run
  in the checker, so a program cannot redefine them either.
* Hostile test code (writes a file, opens a socket, reads the harness's environment, patches the
  harness's modules) gets what any sandboxed program gets: a read-only filesystem, no network, a
  scrubbed environment, another process. It still decides its own problem's verdict: that is what a
  problems file is for.
This replaces the usual "print a nonce after the checks" scheme: any secret inside the program's own
process can be read by the program (frames, gc, /proc/self/mem), so the only channel a program
cannot forge is the one where it never runs the judge at all. The one thing it can do is compute
correct answers, which is solving the problem. Both processes share the run's deadline (``timeout``):
time the test code spends (evalplus's reference solution, once per sample) counts against it.

What the sandbox contains (mode ``namespaces``, the default where the kernel allows it)
---------------------------------------------------------------------------------------
A warm fork server (``_child.py``, started once with ``python -I -S``) forks per program; the fork
calls ``unshare(2)`` and forks again, so the program is init of its own namespaces:
* net namespace: no network at all (no interface is up, not even loopback to the host's services);
* pid namespace: the program's first process is PID 1 of it, and the kernel kills every process in
  the namespace when PID 1 dies. At a timeout or the end of the tests the first fork (its trusted
  parent, outside the namespace) kills PID 1, so nothing the program started outlives its run,
  ``setsid()`` daemons included; if the harness or the fork server dies, ``PR_SET_PDEATHSIG`` (set
  again after the uid change, which clears it, and locked by the seccomp filter) does the same. Its
  own /proc;
* mount namespace (private propagation): the whole filesystem is made read-only
  (``mount_setattr(AT_RECURSIVE)``); /tmp, /dev/shm and /var/tmp are fresh size-capped tmpfs
  mounts, the working directory is /tmp/work, and all of it vanishes with the namespace. Writing,
  deleting or ``os.system("rm ...")`` outside it fails (EROFS). /run and /var/run are fresh, empty
  tmpfs mounts, so the host daemons' sockets there are not even visible;
* As root (CI): the program then runs as a fresh random unprivileged uid, so RLIMIT_NPROC binds
  (root ignores it), root-owned files are unreadable where their modes say so, and no two runs share
  a process count. A private directory holding the interpreter (like /root on the dev machines) is
  covered by an empty tmpfs that re-exposes only the interpreter's own directories, read-only. Not root: a user namespace (root in it mapped to the user), with
  the bounding set and every capability dropped; RLIMIT_NPROC binds there too.
* A seccomp filter (``_seccomp.py``, loaded last, in every mode) refuses new namespaces (unshare,
  setns, clone with CLONE_NEW*), ptrace, bpf, perf_event_open, userfaultfd, the keyring, io_uring,
  every mount call, modules, kexec, clearing the death signal, and ``socket()`` for AF_UNIX,
  AF_NETLINK and AF_VSOCK: no unix socket anywhere on the host (filesystem or abstract) can be
  reached, while ``socketpair`` still works. Its docstring lists the rest and what it does not cover.
* Memory: each process has RLIMIT_AS ``memory_mb``, and the first fork sums the resident memory of
  all the program's processes every 50 ms and kills the run above ``total_memory_mb`` (default
  1 GiB). The hard bound, whatever the sampling misses, is ``max_processes * memory_mb`` (16 GiB by
  default) plus the tmpfs sizes. Pages a fork shares with its parent count in each (conservative).
  No cgroup is used (not covered: a burst faster than the sampling).
* RLIMITs: CPU seconds, address space, file size, open files, process count, no core dumps; a
  wall-clock timeout; ``PR_SET_NO_NEW_PRIVS``; a minimal environment (no secrets); the interpreter
  runs isolated (``-I -S``: no PYTHON* variables, no user site, no .pth hooks).
* The harness survives anything, at a bounded cost per reply: a reply over 1 MiB is refused from its
  length header without being read; the rest is JSON parsed by ``json.loads`` (C, linear in the size,
  deep nesting is a RecursionError), never after the deadline: the worst 1 MiB reply measured (350k
  empty lists) costs the harness 0.28 s of CPU and ~60 MB. The program's output is drained into a
  bounded buffer, and every wait has a deadline.

Mode ``basic`` (fallback when namespaces are refused, e.g. a container without user namespaces; a
warning says so): own process and session, RLIMITs, the seccomp filter, the memory watch, a fresh
host temp dir removed afterwards, a scrubbed environment, and a random unprivileged uid when root;
the first fork is a child subreaper, so processes that left the session come back to it and are
killed at the end. Missing there: network isolation, a read-only filesystem (the program can write
where its uid may, e.g. /tmp), hiding /run; and when the interpreter lives in a directory other
users cannot read (as under /root here), only the modules the fork server preloads can be imported.

Not covered in any mode: kernel exploits, side channels, CPU time of other tenants (the wall
clock bounds it), and programs that read world-readable files (the filesystem is visible, read-only).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import marshal
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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starchat.eval import _child, _reaper, _seccomp

# One script: the filter's and the reaper's modules first, so _child.py finds their functions defined.
CHILD_SOURCE = "\n".join(Path(m.__file__).read_text(encoding="utf-8") for m in (_seccomp, _reaper, _child))
OUTPUT_KEEP = 4096  # bytes of the program's stdout/stderr kept for the report
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# The checker's calls carry the test inputs (evalplus's can be large); still bounded, parsed at C speed.
MAX_TEST_MESSAGE = 16 << 20
# Modules that generated tests import (evalplus's: `from starchat.eval.plus import check_io`), sent to the
# checker as source: the package's own directory may be hidden there (a checkout under /tmp, which the sandbox
# replaces with its own). Each must import nothing but the standard library.
CHECKER_MODULES = ("starchat.eval.plus",)


@functools.cache
def _checker_modules() -> dict[str, str]:
    import importlib.util

    return {name: Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8") for name in CHECKER_MODULES}


@dataclasses.dataclass
class Limits:
    """Resource limits for one program."""

    timeout: float = 10.0  # wall seconds for loading the program and all calls
    cpu_seconds: int = 10
    memory_mb: int = 1024  # address space of each process; Python itself needs ~100 MB
    total_memory_mb: int = 1024  # resident memory of all its processes together (0: no watch)
    file_size_mb: int = 16
    tmpfs_mb: int = 64  # size of the private /tmp, /dev/shm and /var/tmp each (namespaces mode)
    max_processes: int = 16  # threads count too; a hard bound on memory: max_processes * memory_mb
    max_open_files: int = 256

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_AS": self.memory_mb << 20,
            "RLIMIT_FSIZE": self.file_size_mb << 20,
            "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_CORE": 0,
        }


@dataclasses.dataclass
class Result:
    """The verdict on one program."""

    passed: bool
    status: str  # passed | failed | timeout | load_error | crashed | sandbox_error
    error: str = ""
    output: str = ""  # the first bytes the program printed
    seconds: float = 0.0


class CheckFailed(BaseException):
    """Raised inside the checker when the sandboxed program cannot answer a call. A BaseException, so
    test code that catches ``Exception`` around a call cannot swallow a dead or timed-out program."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Job:
    """A program, the name of its function under test, and the test code calling ``check`` (run in a
    sandbox of its own: it comes from the problems file)."""

    program: str
    entry_point: str
    test: str  # defines check(candidate)
    helpers: str = ""  # code run in the checker's sandbox before the test (e.g. the prompt)


# ---- the fork server and the isolation mode ---------------------------------------------------------


class _Zygote:
    """One warm sandbox launcher (``_child.py``) shared by all worker threads; it forks per program."""

    def __init__(self, mode: str):
        import socket

        self.mode = mode
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        extra = os.pathsep.join(p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p))
        env = {
            "PATH": SAFE_PATH,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": "/tmp/work",
            "TMPDIR": "/tmp/work",
            # one BLAS thread: threads count against the process limit
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        # CPU-model settings some machines need for OpenBLAS to compute correctly: not secrets, kept.
        env.update({k: v for k, v in os.environ.items() if k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")})
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", CHILD_SOURCE, str(theirs.fileno()), mode, extra],
            pass_fds=(theirs.fileno(),),
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        ours.settimeout(60)
        self.sock, self.lock = ours, threading.Lock()

    def spawn(self, fds: tuple[int, int, int], total_memory_mb: int = 0) -> int:
        import socket

        with self.lock:
            socket.send_fds(self.sock, [b"spawn %d" % total_memory_mb], list(fds))
            return int(self.sock.recv(64))

    def kill(self, pid: int) -> None:
        with self.lock:
            self.sock.send(b"kill %d" % pid)
            self.sock.recv(64)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


_ZYGOTES: dict[str, _Zygote] = {}
_MODE: dict[str, Any] = {}
_LOCK = threading.Lock()


def _zygote(mode: str) -> _Zygote:
    with _LOCK:
        z = _ZYGOTES.get(mode)
        if z is None or not z.alive():
            if not _ZYGOTES:
                atexit.register(shutdown)
            z = _ZYGOTES[mode] = _Zygote(mode)
        return z


def shutdown() -> None:
    """Stop the fork servers (they also stop by themselves when this process exits)."""
    with _LOCK:
        for z in _ZYGOTES.values():
            z.close()
        _ZYGOTES.clear()


def sandbox_mode() -> dict[str, Any]:
    """The strongest mode that works here, probed once: {'name': 'namespaces'|'basic', 'warning': str}."""
    with _LOCK:
        if _MODE:
            return dict(_MODE)
    mode = _probe()
    with _LOCK:
        _MODE.update(mode)
    if mode["warning"]:
        warnings.warn(mode["warning"], RuntimeWarning, stacklevel=2)
    return dict(mode)


def _probe() -> dict[str, Any]:
    job = Job("def f():\n    return 1\n", "f", "def check(candidate):\n    assert candidate() == 1\n")
    if os.environ.get("STARCHAT_SANDBOX") == "basic":
        why = "STARCHAT_SANDBOX=basic"
    else:
        res = _run(job, Limits(timeout=30), "namespaces")
        if res.passed:
            return {"name": "namespaces", "warning": ""}
        why = f"{res.status}: {res.error} {res.output[-300:]}".strip()
    return {
        "name": "basic",
        "warning": f"sandbox: namespaces unavailable ({why}); running in basic mode "
        "without network isolation or a read-only filesystem",
    }


# ---- running one job --------------------------------------------------------------------------------


def run_job(job: Job, limits: Limits | None = None, mode: str | None = None) -> Result:
    """Run one program in the sandbox and judge it with the problem's checker (sandboxed too). Never raises for the
    program's behaviour; a broken sandbox itself reports status 'sandbox_error'."""
    return _run(job, limits or Limits(), mode or sandbox_mode()["name"])


def _sandbox_uid() -> int | None:
    # A fresh uid per program: RLIMIT_NPROC counts per uid, so runs never share a count.
    return random.randrange(1_000_000, 2_000_000_000) if os.geteuid() == 0 else None


def _config(
    entry_point: str, program: str, limits: Limits, mode: str, uid: int | None, hostdir: str | None
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "program": program,
        "entry_point": entry_point,
        "limits": limits.rlimits(),
        "uid": uid,
        "tmpfs_mb": limits.tmpfs_mb,
        "drop_caps": os.geteuid() != 0 and mode == "namespaces",
        "isolate_fs": mode == "namespaces",
        "expose": _interpreter_dirs() if uid is not None else [],
    }
    if hostdir:
        cfg["workdir"] = hostdir
        cfg["env"] = {"HOME": hostdir, "TMPDIR": hostdir}
        if os.geteuid() != 0:  # without a user namespace the count includes all of this user's processes
            cfg["limits"]["RLIMIT_NPROC"] += _count_own_processes()
    return cfg


class _Box:
    """One sandboxed process (the program's or the checker's) and the channel to it."""

    def __init__(self, limits: Limits, mode: str, deadline: float, who: str, max_message: int):
        self.uid, self.hostdir, self.pid, self.zygote = _sandbox_uid(), None, None, None
        if mode != "namespaces":
            self.hostdir = tempfile.mkdtemp(prefix="starchat-sandbox-")
            if self.uid is not None:
                os.chown(self.hostdir, self.uid, self.uid)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self.zygote = _zygote(mode)
            self.pid = self.zygote.spawn((req_r, resp_w, out_w), limits.total_memory_mb)
        except (OSError, ValueError) as e:
            for fd in (req_r, req_w, resp_r, resp_w, out_r, out_w):
                os.close(fd)
            self._remove_dir()
            raise CheckFailed("sandbox_error", f"could not start the sandbox: {e}") from None
        for fd in (req_r, resp_w, out_w):
            os.close(fd)
        self.chan = _Channel(req_w, resp_r, out_r, deadline, who, max_message)

    def _remove_dir(self) -> None:
        if self.hostdir:
            shutil.rmtree(self.hostdir, ignore_errors=True)

    def close(self) -> None:
        self.chan.close()
        try:
            self.zygote.kill(self.pid)
        except OSError:
            pass
        self._remove_dir()


def _run(job: Job, limits: Limits, mode: str) -> Result:
    start = time.monotonic()
    boxes: list[_Box] = []

    def box(who: str, max_message: int, cfg: dict[str, Any]) -> _Channel:
        b = _Box(limits, mode, start + limits.timeout, who, max_message)
        boxes.append(b)
        b.chan.send({**_config(cfg["entry_point"], cfg.pop("program", ""), limits, mode, b.uid, b.hostdir), **cfg})
        return b.chan

    try:
        program = box("the program", _child.MAX_MESSAGE, {"program": job.program, "entry_point": job.entry_point})
        # The checker starts only once the program loaded: a program that does not load costs one sandbox.
        result = _judge(
            job,
            program,
            lambda: box(
                "the problem's test code",
                MAX_TEST_MESSAGE,
                {
                    "role": "checker",
                    "entry_point": job.entry_point,
                    "helpers": job.helpers,
                    "test": job.test,
                    "modules": _checker_modules(),
                },
            ),
        )
    except CheckFailed as e:
        result = Result(False, e.status, str(e))
    finally:
        for b in boxes:
            b.close()
    result.output = boxes[0].chan.output.decode("utf-8", "replace") if boxes else ""
    result.seconds = time.monotonic() - start
    return result


def _interpreter_dirs() -> list[str]:
    """Directories the sandboxed interpreter reads: its prefixes and import path, resolved."""
    dirs = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(sys.executable),
        os.path.dirname(os.path.realpath(sys.executable)),
        *sys.path,
    }
    return sorted({os.path.realpath(d) for d in dirs if d and os.path.isdir(d)})


def _count_own_processes() -> int:
    uid, n = os.getuid(), 0
    for p in Path("/proc").iterdir():
        try:
            n += p.name.isdigit() and p.stat().st_uid == uid
        except OSError:
            pass
    return n


def _judge(job: Job, program: _Channel, start_checker: Callable[[], _Channel]) -> Result:
    """Relay the checker's calls to the program and its plain-data results back, until the checker's verdict.
    A program that dies or stalls during a call ends the run here (CheckFailed), whatever the test code
    would have done about it: it never sees that failure, so it cannot catch it."""
    first = program.recv()
    if "setup_error" in first:
        return Result(False, "sandbox_error", first["setup_error"])
    if "load_error" in first:
        return Result(False, "load_error", first["load_error"])
    if not first.get("ready"):
        raise CheckFailed("crashed", "the program sent an unexpected message")
    checker = start_checker()
    while True:
        msg = checker.recv()
        call = msg.get("call")
        if isinstance(call, dict) and isinstance(call.get("args"), list) and isinstance(call.get("kwargs"), dict):
            for part in (call["args"], call["kwargs"]):
                _decode(part, "sandbox_error", "the test code sent malformed arguments")
            program.send({"args": call["args"], "kwargs": call["kwargs"]})
            reply = program.recv()
            if "ok" in reply:
                _decode(reply["ok"], "crashed", "malformed result")
                checker.send({"ok": reply["ok"]})
            elif "exc" in reply:
                checker.send({"exc": str(reply.get("exc"))[:200], "msg": str(reply.get("msg"))[:500]})
            else:
                raise CheckFailed("crashed", "the program sent an unexpected reply")
        elif isinstance(msg.get("verdict"), dict):
            if msg["verdict"].get("passed") is True:
                return Result(True, "passed")
            return Result(False, "failed", str(msg["verdict"].get("failed", ""))[:2000])
        elif "sandbox_error" in msg or "setup_error" in msg:
            return Result(False, "sandbox_error", str(msg.get("sandbox_error") or msg.get("setup_error"))[:2000])
        else:
            raise CheckFailed("sandbox_error", "the problem's test code sent an unexpected message")


def _decode(value, status: str, what: str):
    try:
        return _child.decode(value)
    except (ValueError, TypeError, RecursionError, AttributeError) as e:
        raise CheckFailed(status, f"{what}: {e}") from None


class _Channel:
    """Framed messages to and from one sandboxed process with a hard deadline; drains its output.
    ``who`` names it in errors; ``max_message``: a longer reply is refused from its length header."""

    def __init__(
        self,
        req_fd: int,
        resp_fd: int,
        out_fd: int,
        deadline: float,
        who: str = "the program",
        max_message: int = 1 << 20,
    ):
        self.req_fd, self.fd, self.out_fd, self.deadline = req_fd, resp_fd, out_fd, deadline
        self.who, self.max_message = who, max_message
        self.output = b""
        self.buf = b""

    def send(self, obj) -> None:
        data = marshal.dumps(obj)
        view = memoryview(struct.pack("<Q", len(data)) + data)
        try:
            while view:
                if not select.select([], [self.req_fd], [], self._left())[1]:
                    raise CheckFailed("timeout", "timed out")
                view = view[os.write(self.req_fd, view[:65536]) :]
        except OSError:  # EPIPE: nobody reads any more
            raise CheckFailed("crashed", f"{self.who} exited before the tests finished") from None

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
                    os.close(self.out_fd)
                    self.out_fd = None
                elif len(self.output) < OUTPUT_KEEP:
                    self.output += chunk[: OUTPUT_KEEP - len(self.output)]
            if self.fd in ready:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    raise CheckFailed("crashed", f"{self.who} exited before the tests finished")
                self.buf += chunk

    def recv(self):
        self._fill(8)
        (n,) = struct.unpack("<Q", self.buf[:8])
        if n > self.max_message:
            raise CheckFailed("crashed", f"{self.who} sent a {n}-byte message (limit {self.max_message})")
        self._fill(8 + n)
        data, self.buf = self.buf[8 : 8 + n], self.buf[8 + n :]
        self._left()  # no parse after the deadline
        try:  # C-speed and linear in the (capped) size; deep nesting raises RecursionError
            msg = json.loads(data)
        except (ValueError, RecursionError, MemoryError, TypeError):
            raise CheckFailed("crashed", f"{self.who} sent a malformed message") from None
        if not isinstance(msg, dict):
            raise CheckFailed("crashed", f"{self.who} sent a malformed message")
        return msg

    def close(self) -> None:
        for fd in (self.req_fd, self.fd, self.out_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


# ---- many jobs --------------------------------------------------------------------------------------


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_many(
    jobs: Iterable[Job],
    limits: Limits | None = None,
    workers: int | None = None,
    on_result: Callable[[int, Result], None] | None = None,
) -> list[Result]:
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
