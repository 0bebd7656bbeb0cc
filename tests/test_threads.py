"""The thread policy: how many threads from the CPUs and the load, what the user set wins, the CLI applies it."""

import os
import sys
import time

import pytest

from starchat import threads
from starchat.errors import StarchatError


@pytest.fixture
def clean_env(monkeypatch):
    """No OpenMP settings of the test run's own; apply()'s writes are undone after the test."""
    for k in (
        "OMP_NUM_THREADS",
        "OMP_WAIT_POLICY",
        "GOMP_SPINCOUNT",
        "LOCAL_WORLD_SIZE",
        "RAYON_NUM_THREADS",
        threads._OURS,
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(threads, "_applied", None)
    if "torch" in sys.modules:
        n = sys.modules["torch"].get_num_threads()
        yield monkeypatch
        sys.modules["torch"].set_num_threads(n)
    else:
        yield monkeypatch


def fixed_machine(mp, cpus: int, load: float) -> None:
    mp.setattr(threads, "usable_cpus", lambda: cpus)
    mp.setattr(threads, "busy_cpus", lambda: load)


@pytest.mark.parametrize(
    "cpus,load,ranks,want",
    [
        (2, 0.0, 1, 2),  # idle: every usable CPU
        (2, 0.3, 1, 2),  # background noise does not cost a core
        (2, 1.0, 1, 1),  # one competing job: the core it leaves
        (2, 5.0, 1, 1),  # overloaded: never below one
        (16, 4.4, 1, 12),  # the idle cores of a bigger machine
        (16, 0.0, 4, 4),  # four ranks on one machine share it
        (1, 0.0, 1, 1),
    ],
)
def test_pick_threads(cpus, load, ranks, want):
    assert threads.pick_threads(cpus, load, ranks) == want


def test_usable_cpus_follows_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity API here")
    assert threads.usable_cpus() == len(os.sched_getaffinity(0))
    # The mask, not the machine: a process pinned to one CPU gets one thread.
    pid = os.fork()
    if pid == 0:  # child: pin, check, report through the exit status
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        os._exit(0 if threads.usable_cpus() == 1 else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_busy_cpus_sees_a_competitor_now_and_not_one_that_has_finished():
    if threads._cpu_ticks(set(os.sched_getaffinity(0))) is None:
        pytest.skip("no /proc/stat here")
    if threads.busy_cpus(0.3) > threads.usable_cpus() - 1:
        pytest.skip("no idle CPU here to see a competitor start and stop on")
    import subprocess

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        during = threads.busy_cpus(0.3)
    finally:
        hog.kill()
        hog.wait()
    after = threads.busy_cpus(0.3)  # the 1-minute load average would still count the hog for a minute
    assert during >= 0.8 and after <= during - 0.6, (during, after)


def test_plan_order_threads_flag_then_user_env_then_load(clean_env):
    fixed_machine(clean_env, 8, 2.0)
    assert threads.plan().threads == 6 and threads.plan().source == "affinity and load"
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert (threads.plan().threads, threads.plan().source) == (3, "OMP_NUM_THREADS")
    assert (threads.plan(5).threads, threads.plan(5).source) == (5, "--threads")
    with pytest.raises(StarchatError, match="--threads 0"):
        threads.plan(0)


def test_a_rank_chooses_again_for_its_share_of_what_the_launcher_inherited(clean_env):
    fixed_machine(clean_env, 8, 0.0)
    threads.apply()  # the `starchat train` that relaunches under accelerate
    assert os.environ["OMP_NUM_THREADS"] == "8"
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")  # a rank: inherited our OMP_NUM_THREADS, not the user's
    assert threads.plan().threads == 4


def test_apply_sets_a_short_spin_unless_the_user_chose(clean_env):
    fixed_machine(clean_env, 2, 0.0)
    threads.apply()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["GOMP_SPINCOUNT"] == "1000"
    assert os.environ["RAYON_NUM_THREADS"] == "2"  # the tokenizers' pool too
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        clean_env.delenv("OMP_WAIT_POLICY", raising=False)
        clean_env.delenv("GOMP_SPINCOUNT", raising=False)
        clean_env.setenv(k, "ACTIVE" if k == "OMP_WAIT_POLICY" else "0")
        threads.apply()  # either one set by the user: neither is written
        assert os.environ.get("OMP_WAIT_POLICY", "unset") == ("ACTIVE" if k == "OMP_WAIT_POLICY" else "unset")
        assert os.environ.get("GOMP_SPINCOUNT", "unset") == ("0" if k == "GOMP_SPINCOUNT" else "unset")


def test_apply_sets_torch_threads_when_torch_is_loaded(clean_env):
    torch = pytest.importorskip("torch")
    fixed_machine(clean_env, 2, 5.0)
    p = threads.apply()
    assert p.threads == 1 and torch.get_num_threads() == 1 and threads.current() == 1
    threads.apply(2)
    assert torch.get_num_threads() == 2 and threads.current() == 2


def test_cli_applies_the_policy_before_the_command_runs(clean_env):
    import starchat.cli.serve as serve_cli
    from starchat.cli import main

    fixed_machine(clean_env, 2, 0.0)
    seen = {}

    def fake_serve(args):
        seen.update(policy=os.environ.get("OMP_WAIT_POLICY"), threads=threads.current())
        return 0

    clean_env.setattr(serve_cli, "_serve", fake_serve)
    assert main(["serve", "--threads", "1"]) == 0
    assert seen == {"policy": "PASSIVE", "threads": 1}
    assert main(["serve"]) == 0
    assert seen["threads"] == 2  # idle fake machine: both CPUs


def test_cli_threads_zero_is_a_clear_error(clean_env, capsys):
    from starchat.cli import main

    assert main(["eval", "humaneval", "--samples", "x.jsonl", "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err


@pytest.mark.slow
def test_llama_cpp_uses_the_chosen_threads(clean_env):
    """The default GGUF engine and the serving slots' context run with the policy's count."""
    from starchat.inference import load_engine

    fixed_machine(clean_env, 2, 5.0)  # loaded: one thread
    threads.apply()
    engine = load_engine(n_ctx=256)
    try:
        assert engine.n_threads == 1
        assert engine.llm.context_params.n_threads == 1 and engine.llm.context_params.n_threads_batch == 1
    finally:
        engine.close()
