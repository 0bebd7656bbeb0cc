"""Atomic writes shared by every stage: a reader never sees a half-written file or folder."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc/self/status, Linux >= 4.7):
    setting and restoring it (the only portable way) races other threads creating files meanwhile."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(tmp: str | os.PathLike, target: str | os.PathLike, directory: bool = False) -> None:
    """Give ``tmp`` (about to be renamed onto ``target``) the mode a plainly written file or folder would have.

    mkstemp makes 0600 files and mkdtemp 0700 folders, whatever the umask; renamed into place they would
    keep that, so a model trained by one user could not be served by another. ``target``'s own mode is kept
    where it exists (a file made group-readable stays so); otherwise 0666 (0777 for a folder) less the umask,
    as ``open``/``mkdir`` give."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        mode = (0o777 if directory else 0o666) & ~current_umask()
    os.chmod(tmp, mode)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place (mode: see publish_mode)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the finished folder ``new`` to ``target``.

    An existing ``target`` is swapped with ``new`` in one step (``renameat2(RENAME_EXCHANGE)``), so at no
    moment is there neither, even if the process is killed; the old content is then removed. Where the
    kernel or filesystem cannot exchange (not Linux, or glibc < 2.28), the old ``target`` is renamed
    aside first and removed after the new one is in place: there, a kill between those two renames
    leaves only ``.NAME.old-PID`` (not covered). What a killed call leaves behind is removed by the next
    one (``clean_stale``). ``new`` gets ``target``'s mode, or a new folder's under the umask (publish_mode):
    a ``temp_dir_beside`` folder is 0700.
    """
    new, target = Path(new), Path(target)
    clean_stale(target)
    publish_mode(new, target, directory=True)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        if _exchange(new, target):
            os.replace(new, old)  # the old content, under a name clean_stale knows
        else:
            os.replace(target, old)
            os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
        return target
    os.replace(new, target)
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where renameat2 or RENAME_EXCHANGE is not available."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):  # glibc < 2.28, musl
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def temp_dir_beside(target: str | os.PathLike) -> Path:
    """A fresh temporary folder beside ``target`` (``.NAME.tmp-PID-XXXX``) for building it before replace_dir."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))


def clean_stale(target: str | os.PathLike) -> list[Path]:
    """Remove what a killed run left beside ``target``: ``.NAME.tmp-PID-*`` and ``.NAME.old-PID`` folders
    whose process is gone. A live process's folders are kept (two builds may share a parent folder).
    Not covered: a process on another host sharing the folder (pids are per host)."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for p in target.parent.glob(f".{glob.escape(target.name)}.*"):
        kind, _, rest = p.name[len(target.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive flock(2) on ``path`` (created if missing): other processes asking for it wait.

    For build-once steps that every rank of a distributed run, or two runs sharing a cache, reach at
    the same time: one builds, the others wait and then find the result. Not covered: filesystems where
    flock does not reach across hosts (some NFS mounts), so ranks on other machines are not held back.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
