"""The sandboxed side of `starchat.eval.sandbox`: set up limits, drop privileges, load the program, serve calls.

The parent runs this file's source with ``python -I -c`` inside the namespaces it made. Everything up to
``exec(program)`` is trusted; after that the process belongs to the program, so nothing here decides a
verdict: this side only returns plain-data results of calls, and the parent's checker judges them.
The wire helpers (``send``, ``recv``, ``encode``, ``decode``) are shared with the parent by import.
"""

import json
import os
import struct
import sys

MAX_MESSAGE = 16 << 20  # a reply over 16 MiB is treated as a broken program, not buffered
REQ_FD = 0  # requests arrive on stdin; stdout/stderr are the program's
RESP_FD = 3  # replies leave on the inherited fd named in argv[1] (set in main)


# ---- wire format: 8-byte length + JSON; non-JSON types are tagged so they round-trip exactly ----------

def encode(value, depth=0):
    """Plain data -> JSON-able, or TypeError for anything that is not a builtin value type."""
    if depth > 200:
        raise TypeError("value nested too deeply")
    t = type(value)  # exact types only: a subclass could carry a forged __eq__
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
        (tag, body), = value.items()
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
    raise ValueError("malformed value on the wire")


def send(fd, obj):
    data = json.dumps(obj).encode()
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
    (n,) = struct.unpack("<Q", _read_exact(fd, 8))
    if n > MAX_MESSAGE:
        raise ValueError(f"message of {n} bytes is over the limit")
    return json.loads(_read_exact(fd, n))


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
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    rc = libc.syscall(SYS_mount_setattr, -100, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    _check(ctypes, rc, "mount_setattr(/, read-only)")
    for top in sorted({t for t, _, _ in keep}):
        _check(ctypes, libc.mount(b"tmpfs", top.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755"),
               f"hide {top}")
    for _, fd, path in keep:
        os.makedirs(path, mode=0o755, exist_ok=True)
        src = f"/proc/self/fd/{fd}".encode()
        _check(ctypes, libc.mount(src, path.encode(), None, MS_BIND | MS_REC, None), f"expose {path}")
        os.close(fd)
    opts = f"size={tmpfs_mb}m,mode=1777".encode()
    for target in (b"/tmp", b"/dev/shm", b"/var/tmp"):
        if os.path.isdir(target):
            rc = libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, opts)
            _check(ctypes, rc, f"mount tmpfs on {target.decode()}")
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
    _no_new_privs()
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
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(program, "program.py", "exec"), namespace)
        fn = namespace[entry_point]
    except BaseException as e:  # noqa: BLE001  (SystemExit too: the program chose not to load)
        send(RESP_FD, {"load_error": f"{type(e).__name__}: {e}"[:2000],
                       "trace": traceback.format_exc()[-2000:]})
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


def main():
    global RESP_FD
    RESP_FD = int(sys.argv[1])
    cfg = recv(REQ_FD)
    try:
        setup(cfg)
    except BaseException as e:  # noqa: BLE001
        send(RESP_FD, {"setup_error": f"{type(e).__name__}: {e}"})
        os._exit(3)
    serve(cfg)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
