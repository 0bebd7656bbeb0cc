"""Telling a reply that looped from one cut off at the token limit, and the defaults that suit code."""

import inspect
import io
import random
import re
import textwrap
from pathlib import Path

import pytest

from starchat.chat import ChatSession, PipeIO
from starchat.chat.advice import repeated_tail
from starchat.inference import SamplingParams

LOOP_LINES = "Here:\n```python\n" + "print('hello world')\nprint('again')\n" * 12 + "print('hel"
LOOP_CHARS = "The values are: " + "0, " * 60 + "0"
COUNTING = "```python\n" + "".join(
    f"        if not isinstance(kwargs[{i}], int):\n            raise TypeError(type(kwargs[{i}]))\n" for i in range(30)
)
NUMBERS = "```python\nallowed = (" + ", ".join(str(i) for i in range(1, 120))
_pick = random.Random(0).choice  # the same few lines in no fixed period
SHUFFLED = "```python\n" + "".join(
    f"    {_pick(['a()', 'b()', 'c()', 'def d(self):', 'return a()'])}\n" for _ in range(40)
)
HONEST = "Here is a longer answer.\n```python\n" + inspect.getsource(textwrap)[:6000]  # real code, cut mid-line


@pytest.mark.parametrize(
    "text, says",
    [
        (LOOP_LINES, "the same 2 lines 12 times"),
        (LOOP_CHARS, "over and over"),
        (COUNTING, "the same 2 lines 30 times"),  # only the numbers change
        (NUMBERS, "over and over, with the numbers counting up"),
        (SHUFFLED, "the same 5 lines, in some order, make up its last 24"),
    ],
)
def test_a_loop_at_the_end_of_the_reply_is_found(text, says):
    assert says in repeated_tail(text)


@pytest.mark.parametrize(
    "text",
    [
        HONEST,
        "```python\nclass A:\n    pass\n\n\nclass B:\n    pass\n\n\nclass C:\n    pass\n",  # short repeats are code
        "| a | b |\n|---|---|\n| 1 | 2 |\n",
    ],
)
def test_code_that_merely_repeats_a_little_is_not_a_loop(text):
    assert repeated_tail(text) is None


class _Scripted:
    def __init__(self, reply: str, finish_reason: str) -> None:
        from types import SimpleNamespace

        self.reply, self.done = reply, SimpleNamespace(text=reply, finish_reason=finish_reason)

    def stream(self, conversation, params, cancel=None):
        reply, done = self.reply, self.done

        class Gen:
            completion = done

            def __iter__(self):
                yield reply

            def close(self):
                pass

        return Gen()


def _warnings(reply: str, finish_reason: str) -> list[str]:
    err = io.StringIO()
    ChatSession(_Scripted(reply, finish_reason), PipeIO(io.StringIO("q\n"), io.StringIO(), err)).run()
    return [ln for ln in err.getvalue().splitlines() if ln.startswith("warning: ")]


def test_a_fence_left_open_by_a_loop_says_the_model_repeated_itself_not_raise_max_new_tokens():
    warnings = _warnings(LOOP_LINES, "length")
    (warning,) = [w for w in warnings if "not closed" in w]
    assert warning.startswith("warning: code block 1: not closed: the model repeated itself")
    assert not any("raise max_new_tokens" in w for w in warnings)


def test_a_fence_cut_off_without_a_loop_still_says_raise_max_new_tokens():
    warnings = _warnings(HONEST, "length")
    assert any("raise max_new_tokens" in w for w in warnings)
    assert not any("repeated itself" in w for w in warnings)


def test_a_prose_loop_at_the_token_limit_gets_its_own_warning():
    warnings = _warnings(LOOP_CHARS, "length")
    assert len(warnings) == 1 and "the model repeated itself until the token limit" in warnings[0]
    assert _warnings(LOOP_CHARS, "stop") == []  # it ended by itself: the limit is not the story


def test_help_shows_the_multi_line_syntax():
    err = io.StringIO()
    ChatSession(_Scripted("", "stop"), PipeIO(io.StringIO("/help\n"), io.StringIO(), err)).run()
    assert re.search(r'^  """ +on a line of its own: start a multi-line message', err.getvalue(), re.MULTILINE)


def test_default_sampling_has_no_repetition_penalty():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.repetition_penalty) == (0.2, 50, 0.95, 1.0)


def test_the_playground_starts_from_the_same_sampling_defaults():
    html = (Path(__file__).resolve().parents[2] / "src/starchat/server/static/playground.html").read_text()
    slider = {m[0]: float(m[1]) for m in re.findall(r'<input id="(\w+)" type="range"[^>]* value="([\d.]+)"', html)}
    p = SamplingParams()
    assert {k: slider[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty")} == {
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k,
        "repetition_penalty": p.repetition_penalty,
    }
    assert slider["max_tokens"] == p.max_new_tokens
