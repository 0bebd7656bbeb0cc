"""`starchat chat` in a real terminal (tmux): a reply taller than the window lands in the scrollback once, and its
code copies as written (no margin, no hard wraps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chatterm_fake import CODE, LAST, PROSE_AFTER, PROSE_BEFORE

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux; .ci/run installs it)"
    ),
]


def _tmux(sock: Path, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-S", str(sock), *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def _chat_in_tmux(tmp_path: Path, width: int, height: int, *flags: str) -> list[str]:
    """Every line of the pane, scrollback and screen, after one question; soft-wrapped lines joined."""
    sock = tmp_path / "tmux.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}  # rich would trust these
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    cmd = " ".join([sys.executable, str(HERE / "chatterm_fake.py"), *flags])
    subprocess.run(
        ["tmux", "-S", str(sock), "-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height), cmd],
        check=True,
        env=env,
        timeout=30,
    )
    try:
        _tmux(sock, "set-option", "-g", "history-limit", "10000")
        lines = _wait_for(sock, lambda ls: any(ln.startswith(">>>") for ln in ls), "the first prompt")
        _tmux(sock, "send-keys", "-t", "0", "-l", "show me a tree")
        _tmux(sock, "send-keys", "-t", "0", "Enter")
        lines = _wait_for(
            sock,
            lambda ls: any(LAST in ln for ln in ls) and sum(ln.startswith(">>>") for ln in ls) >= 2,
            "the end of the reply",
        )
        return lines
    finally:
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], check=False, capture_output=True, timeout=30)


def _wait_for(sock: Path, done, what: str, limit_s: float = 120.0) -> list[str]:
    deadline = time.monotonic() + limit_s
    while True:
        lines = [ln.rstrip() for ln in _tmux(sock, "capture-pane", "-p", "-J", "-S", "-", "-t", "0").splitlines()]
        if done(lines):
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"tmux: no {what} after {limit_s}s; the pane:\n" + "\n".join(lines[-40:]))
        time.sleep(0.2)


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40)])
def test_a_tall_reply_is_in_the_scrollback_once_and_its_code_copies_cleanly(tmp_path, width, height):
    lines = _chat_in_tmux(tmp_path, width, height)
    reply = lines[next(i for i, ln in enumerate(lines) if "show me a tree" in ln) + 1 :]
    for prose in PROSE_BEFORE + PROSE_AFTER + [LAST]:  # short lines: markdown does not rewrap them
        assert sum(prose in ln for ln in reply) == 1, (prose, "\n".join(reply))
    for code in filter(None, CODE):
        # the exact line, as often as the reply has it: no left margin, no hard wrap (the comment is wider
        # than 80 columns: the terminal soft-wraps it, and capture-pane -J joins it back)
        assert reply.count(code) == CODE.count(code), (code, "\n".join(reply))
    start = reply.index(CODE[0])
    assert reply[start : start + len(CODE)] == CODE  # one piece, blank lines and all, as it would be copied
