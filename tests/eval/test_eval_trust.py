"""The trust boundary: a problems file's test code is contained like a program, never run in the harness."""

import json
import os
import socket
import uuid
from pathlib import Path

import pytest
from eval_fakes import write_samples

from starchat.eval import sandbox
from starchat.eval.humaneval import HumanEvalConfig, score_samples
from starchat.eval.sandbox import Job, Limits, run_job, sandbox_mode

PROMPT = 'def add(a, b):\n    """The sum."""\n'


def _problems_file(tmp_path: Path, test: str) -> Path:
    path = tmp_path / "hostile.jsonl"
    path.write_text(json.dumps({"task_id": "Hostile/0", "prompt": PROMPT, "entry_point": "add", "test": test}) + "\n")
    return path


@pytest.fixture
def victim():
    path = Path(__file__).parent / f".trust-victim-{uuid.uuid4().hex}"
    path.write_text("keep me")
    yield path
    path.unlink(missing_ok=True)


def test_a_problem_files_test_code_cannot_write_files_or_reach_the_network(tmp_path, victim):
    if sandbox_mode()["name"] != "namespaces" and os.geteuid() != 0:
        pytest.skip("basic mode as a normal user: the sandboxed uid is ours, and it may write our files")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    test = (
        f"import socket\n"
        f"try:\n    open({str(victim)!r}, 'w').write('pwned')\nexcept OSError:\n    pass\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'exfiltrate')\n"
        f"except OSError:\n    pass\n"
        f"def check(candidate):\n    assert candidate(2, 3) == 5\n"
    )
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "Hostile/0", "completion": "    return a + b\n"}])
    try:
        summary = score_samples(
            samples,
            HumanEvalConfig(output=tmp_path / "out", progress=False, problems_file=str(_problems_file(tmp_path, test))),
        )
        assert summary["pass_at_k"] == {"pass@1": 1.0}  # the tests themselves still ran and judged
        assert victim.read_text() == "keep me"
        if sandbox_mode()["name"] == "namespaces":
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        server.close()


def test_test_code_runs_outside_the_harness_process(monkeypatch):
    monkeypatch.setenv("STARCHAT_TEST_SECRET", "hunter2")
    test = (
        "import os, sys\n"
        "def check(candidate):\n"
        "    assert 'STARCHAT_TEST_SECRET' not in os.environ\n"  # the harness's environment is not there
        "    sys.modules['starchat.eval.sandbox'].PWNED = True\n"  # nor its modules (KeyError: not imported)
        "    assert candidate(2, 3) == 5\n"
    )
    res = run_job(Job(PROMPT + "    return a + b\n", "add", test, helpers=PROMPT), Limits(timeout=10))
    assert not hasattr(sandbox, "PWNED")
    assert (res.status, res.error) == ("failed", "KeyError: 'starchat.eval.sandbox'")


def test_test_code_that_loops_or_exits_without_a_verdict_does_not_pass():
    program = PROMPT + "    return a + b\n"
    loops = run_job(Job(program, "add", "def check(c):\n    while True:\n        pass\n"), Limits(timeout=1.5))
    exits = run_job(Job(program, "add", "import os\ndef check(c):\n    os._exit(0)\n"), Limits(timeout=5))
    assert (loops.passed, loops.status) == (False, "timeout")
    assert (exits.passed, exits.status) == (False, "crashed")
    assert exits.error == "the problem's test code exited before the tests finished"
