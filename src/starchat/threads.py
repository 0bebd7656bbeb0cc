"""Thread policy for the commands that run torch or llama.cpp on a CPU that may be shared with other jobs.

On a shared CPU two things made every command collapse (issue 15/16): OpenMP workers that spin while
waiting steal the cores the other threads need (a torch step ~8x slower with a load of 5 on 2 cores),
and one thread per core fights every other job for every core (llama.cpp chat 17-112 s with 2 threads,
3-11 s with 1). The CLI calls :func:`apply` once, after parsing and before torch or llama.cpp load:

- OpenMP workers spin only briefly before they sleep, unless the user set ``OMP_WAIT_POLICY`` or
  ``GOMP_SPINCOUNT``: ``GOMP_SPINCOUNT=1000`` for GNU libgomp (torch's and llama.cpp's), and
  ``OMP_WAIT_POLICY=PASSIVE`` for other runtimes (libgomp takes the spin count over the policy). Sleeping at
  once (PASSIVE alone) costs llama.cpp dearly: it waits at a barrier after every op, and waking its threads
  each time made a 16-row decode step 1.3-1.7x slower on an idle machine; a short spin is as fast as
  spinning forever there, and on a busy CPU as good as PASSIVE for both torch and llama.cpp
  (figures: README, Benchmarks);
- a thread count: ``--threads`` if given, else the user's ``OMP_NUM_THREADS``, else the CPUs this
  process may run on (``os.sched_getaffinity``: taskset, cgroups' cpusets, containers) minus the
  ones other processes keep busy (their busy time in /proc/stat over the next 0.1 s; the 1-minute load
  average where /proc/stat cannot be read), shared among the ranks of a run on
  this machine (``LOCAL_WORLD_SIZE``), at least 1. It goes to torch (``OMP_NUM_THREADS`` before it
  loads, ``torch.set_num_threads`` if it already has), to the tokenizers' Rust pool
  (``RAYON_NUM_THREADS`` unless set) and is llama.cpp's default ``n_threads`` (:func:`current`).

Why measured, not the load average: the 1-minute average lags by tens of seconds, so a command run
right after another (`data pairs` then `train`) counted its finished predecessor as a competitor and
ran on 1 thread of 2 (the nano loop's DPO took 7 min 42 s instead of ~5). Not covered: the load is read
once at start (a job that starts later is not seen), and a competitor idle during those 0.1 s (between
bursts) is not seen either.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

# Marks an OMP_NUM_THREADS that we wrote (not the user): child processes (the ranks `accelerate launch`
# starts) inherit it and choose again for their share instead of taking it as the user's.
_OURS = "STARCHAT_AUTO_OMP_NUM_THREADS"
SPIN_COUNT = 1000  # libgomp spins before a waiting worker sleeps: microseconds, not its default's milliseconds


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    source: str  # "--threads", "OMP_NUM_THREADS" or "affinity and load"
    cpus: int
    load: float

    def describe(self) -> str:
        return f"{self.threads} threads ({self.source}; {self.cpus} CPUs usable, load {self.load:.1f})"


_applied: ThreadPlan | None = None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


MEASURE_S = 0.1  # /proc/stat counts in 10 ms ticks: 20 per 2 CPUs, enough to tell busy from idle


def load_average() -> float:
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cpus`` so far, from /proc/stat; None where it cannot be read."""
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total else None


def busy_cpus(window: float = MEASURE_S) -> float:
    """How many of this process's usable CPUs other processes keep busy, measured over ``window`` s
    (this process sleeps meanwhile); the 1-minute load average where /proc/stat is unavailable."""
    try:
        mine = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return load_average()
    first = _cpu_ticks(mine)
    if first is None:
        return load_average()
    time.sleep(window)
    second = _cpu_ticks(mine)
    if second is None or second[1] <= first[1]:
        return load_average()
    return len(mine) * (second[0] - first[0]) / (second[1] - first[1])


def pick_threads(cpus: int, load: float, ranks: int = 1) -> int:
    """Threads for one process: the usable CPUs that other work leaves idle, shared by ``ranks``, >= 1.

    ``load`` counts busy CPUs (or runnable processes); a core counts as taken once the load on it reaches one half
    (``round``), so a lone competing job on 2 CPUs leaves 1 thread, and an idle machine all of them.
    """
    share = max(1, cpus // max(1, ranks))
    idle = cpus - int(load + 0.5)
    return max(1, min(share, idle))


def _env_threads(env) -> int | None:
    value = env.get("OMP_NUM_THREADS", "").strip()
    if not value or env.get(_OURS) == value:
        return None
    try:
        n = int(value.split(",")[0])  # OpenMP allows a list per nesting level: the first is ours
    except ValueError:
        return None
    return n if n > 0 else None


def plan(requested: int | None = None, env=None) -> ThreadPlan:
    """The thread count to use, and why (pure but for reading the affinity and load)."""
    env = os.environ if env is None else env
    cpus = usable_cpus()
    if requested is not None:
        if requested < 1:
            from starchat.errors import StarchatError

            raise StarchatError(f"--threads {requested}: give at least 1 (or leave it out to choose by load)")
        return ThreadPlan(requested, "--threads", cpus, 0.0)
    user = _env_threads(env)
    if user is not None:
        return ThreadPlan(user, "OMP_NUM_THREADS", cpus, 0.0)
    load = busy_cpus()  # only measured when the count is ours to choose
    ranks = env.get("LOCAL_WORLD_SIZE", "1")
    ranks = int(ranks) if ranks.isdigit() else 1  # set by torchrun/accelerate for their ranks
    return ThreadPlan(pick_threads(cpus, load, ranks), "affinity and load", cpus, load)


def apply(requested: int | None = None) -> ThreadPlan:
    """Set the policy for this process (see the module docstring); returns the plan."""
    global _applied
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:  # the user's choice stands
        os.environ["OMP_WAIT_POLICY"], os.environ["GOMP_SPINCOUNT"] = "PASSIVE", str(SPIN_COUNT)
    p = plan(requested)
    if p.source != "OMP_NUM_THREADS":
        os.environ["OMP_NUM_THREADS"] = os.environ[_OURS] = str(p.threads)
    os.environ.setdefault("RAYON_NUM_THREADS", str(p.threads))  # the tokenizers' batch encoder (data build)
    torch = sys.modules.get("torch")
    if torch is not None:  # already loaded (a test, an embedding program): it no longer reads the env
        torch.set_num_threads(p.threads)
    _applied = p
    return p


def current() -> int:
    """Threads for llama.cpp and the like: the applied plan's, else one chosen now."""
    return (_applied or plan()).threads
