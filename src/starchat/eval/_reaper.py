"""The sandbox's reaper: the first fork watches the program's process tree, bounds its memory, and kills it.

Run by ``_child.py``'s first fork, the trusted parent of the program's first process (PID 1 of its pid
namespace). Processes are named by host pid through the host's /proc, opened before the program's own
/proc is mounted over it. The sandbox launcher runs this file's source with ``_child.py`` as one script;
keep it self-contained.
"""

import os


def _descendants(procfd, root):
    """Every process below ``root`` (host pids, read through the host's /proc held open as procfd)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.open(f"{pid}/task", os.O_RDONLY | os.O_DIRECTORY, dir_fd=procfd)
            try:
                tids = os.listdir(tasks)
            finally:
                os.close(tasks)
            for tid in tids:
                fd = os.open(f"{pid}/task/{tid}/children", os.O_RDONLY, dir_fd=procfd)
                try:
                    kids = [int(k) for k in os.read(fd, 1 << 16).split()]
                finally:
                    os.close(fd)
                found += kids
                todo += kids
        except OSError:  # it exited meanwhile
            pass
    return found


def _resident_bytes(procfd, pids):
    total = 0
    for pid in pids:
        try:
            fd = os.open(f"{pid}/statm", os.O_RDONLY, dir_fd=procfd)
            try:
                total += int(os.read(fd, 256).split()[1]) * os.sysconf("SC_PAGE_SIZE")
            finally:
                os.close(fd)
        except (OSError, IndexError, ValueError):
            pass
    return total


def watch(child, procfd, memory_bytes, out_fd, wake_fd, stopping):
    """Wait for the program's first process, killing it when its tree holds more than memory_bytes resident.
    ``stopping`` fills (and wake_fd wakes us) when the zygote's kill request has killed it."""
    import select
    import signal

    while True:
        if stopping:
            return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) & 0xFF
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status) & 0xFF
        if memory_bytes and _resident_bytes(procfd, _descendants(procfd, os.getpid())) > memory_bytes:
            os.kill(child, signal.SIGKILL)
            msg = f"\nsandbox: killed: the program's processes held more than {memory_bytes >> 20} MiB\n"
            try:
                os.write(out_fd, msg.encode())
            except OSError:
                pass
        if select.select([wake_fd], [], [], 0.05)[0]:
            os.read(wake_fd, 512)


def kill_everything_below(procfd):
    """Kill and reap every process under this one (orphans come to us: we are a child subreaper)."""
    import signal

    while True:
        for pid in _descendants(procfd, os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
