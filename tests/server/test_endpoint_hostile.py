"""The endpoint engine against a hostile server (hostile.py): malformed replies are one line naming the server,
a reply is bounded in time (--request-timeout as a whole) and in size, in the engine and in the commands."""

from __future__ import annotations

import io
import json
import re

import pytest
from hostile import Hostile, chunk, hostile_server

from starchat.errors import StarchatError
from starchat.inference import SamplingParams, load_engine
from starchat.inference.endpoint import CHARS_PER_TOKEN
from starchat.inference.endpoint_guard import byte_cap

MSGS = [{"role": "user", "content": "hi"}]
PLAIN = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=16)


@pytest.mark.parametrize(
    "content, shown", [(42, "int 42"), ({"text": "hi"}, "dict {'text': 'hi'}"), (["hi"], "list ['hi']")]
)
def test_a_reply_whose_content_is_not_a_string_is_one_line(content, shown):
    with hostile_server(Hostile(reply=content)) as url:
        engine = load_engine(url)
        with pytest.raises(StarchatError, match="^" + re.escape(f"{url} sent the reply as {shown}, not a string")):
            engine.generate(MSGS, PLAIN)


def test_a_models_list_that_is_not_json_is_one_line():
    with hostile_server(Hostile(models_body=b"<html>welcome</html>")) as url:
        with pytest.raises(StarchatError, match=rf"^{url}/models returned a malformed body \(not JSON"):
            load_engine(url)


def test_a_stream_line_that_is_not_json_is_one_line():
    with hostile_server(Hostile("stream", [chunk("ok"), "data: {not json\n\n", "data: [DONE]\n\n"])) as url:
        gen = load_engine(url).stream(MSGS, PLAIN)
        with pytest.raises(StarchatError, match=rf"^{url} sent a malformed stream chunk"):
            list(gen)


def test_a_streamed_lone_surrogate_is_one_line():
    lone = 'data: {"choices": [{"index": 0, "delta": {"content": "a\\ud800"}, "finish_reason": null}]}\n\n'
    with hostile_server(Hostile("stream", [chunk("ok "), lone, "data: [DONE]\n\n"])) as url:
        gen = load_engine(url).stream(MSGS, PLAIN)
        with pytest.raises(StarchatError, match=rf"^{url} sent a streamed delta with a lone surrogate \(U\+D800\)"):
            list(gen)


@pytest.mark.parametrize("mode", ["trickle-body", "trickle-headers"])
def test_a_trickled_reply_stops_at_the_request_timeout_and_is_not_retried(mode):
    h = Hostile(mode)
    with hostile_server(h) as url:
        engine = load_engine(url, timeout=1)
        with pytest.raises(StarchatError, match=rf"^{url} did not finish its reply within --request-timeout 1 s"):
            engine.generate(MSGS, PLAIN)
    assert h.posts == 1  # a server that trickled once would again: no retry


@pytest.mark.parametrize("mode, pace", [("keep-alive", 0.05), ("endless", 0.2)])
def test_a_stream_that_never_ends_stops_at_the_request_timeout(mode, pace):
    with hostile_server(Hostile(mode, pace=pace)) as url:
        gen = load_engine(url, timeout=1).stream(MSGS, PLAIN)
        with pytest.raises(StarchatError, match="did not finish its reply within --request-timeout 1 s"):
            list(gen)


def test_an_endless_stream_stops_at_max_new_tokens_worth_of_text():
    notes: list[str] = []
    with hostile_server(Hostile("endless", pace=0.0005)) as url:
        gen = load_engine(url, notify=notes.append).stream(MSGS, PLAIN)
        text = "".join(gen)
    assert len(text) == 16 * CHARS_PER_TOKEN and gen.completion.finish_reason == "length"
    assert len(notes) == 1 and "more than max_new_tokens=16 worth of text" in notes[0]


def test_a_reply_over_the_byte_cap_is_refused():
    with hostile_server(Hostile("huge")) as url:
        engine = load_engine(url)
        with pytest.raises(StarchatError, match=rf"^{url} sent a reply over {byte_cap(16)} bytes"):
            engine.generate(MSGS, PLAIN)


def test_a_long_reply_within_the_byte_cap_is_cut_at_max_new_tokens_worth_of_text():
    notes: list[str] = []
    with hostile_server(Hostile(reply="y" * 5000)) as url:
        done = load_engine(url, notify=notes.append).generate(MSGS, PLAIN)
    assert done.text == "y" * (16 * CHARS_PER_TOKEN) and done.finish_reason == "length" and len(notes) == 1


# ---- the commands: one line on stderr, exit 2 ----------------------------------------------------------


def _errors(capsys) -> str:
    """stderr less the warnings (e.g. that the fake server ignores top_k)."""
    return "\n".join(x for x in capsys.readouterr().err.splitlines() if x.strip() and "warning:" not in x)


def test_eval_humaneval_with_a_non_string_reply_is_one_line(tmp_path, capsys):
    from starchat.cli import main

    with hostile_server(Hostile(reply=7)) as url:
        rc = main(
            ["eval", "humaneval", "--model", url, "--limit", "1", "--output", str(tmp_path / "o"), "--no-progress"]
        )
    err = _errors(capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and f"{url} sent the reply as int 7" in err


def test_chat_with_a_lone_surrogate_in_the_stream_is_one_line(monkeypatch, capsys):
    from starchat.cli import main

    lone = 'data: {"choices": [{"index": 0, "delta": {"content": "\\udfff"}, "finish_reason": null}]}\n\n'
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    with hostile_server(Hostile("stream", [chunk("Hello "), lone])) as url:
        rc = main(["chat", "--model", url, "--no-review", "--plain"])
    err = _errors(capsys)
    # one line, and the chat went on (piped: exit status 1 for the error, after the input ran out)
    assert rc == 1 and err == (
        f"error: {url} sent a streamed delta with a lone surrogate (U+DFFF), which is not text: check the "
        "server's detokenizer (the reply was cut here; /retry asks again)"
    )


def test_chat_prints_no_more_than_max_new_tokens_worth_of_an_endless_stream(monkeypatch, capsys):
    from starchat.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    with hostile_server(Hostile("endless", pace=0.0005)) as url:
        rc = main(["chat", "--model", url, "--max-new-tokens", "16", "--no-review", "--plain"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out.strip() == ("tok " * (16 * CHARS_PER_TOKEN // 4)).strip()
    assert "more than max_new_tokens=16 worth of text" in captured.err


def test_chat_with_a_stream_of_keep_alives_stops_at_the_request_timeout(monkeypatch, capsys):
    from starchat.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    with hostile_server(Hostile("keep-alive", pace=0.05)) as url:
        rc = main(["chat", "--model", url, "--request-timeout", "1", "--no-review", "--plain"])
    err = _errors(capsys)
    assert rc == 1 and err == f"error: {url} did not finish its reply within --request-timeout 1 s"


def test_eval_judge_with_answers_that_are_not_strings_is_one_line(tmp_path, capsys):
    from starchat.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "Say hi."}) + "\n")
    with hostile_server(Hostile(reply={"no": "text"})) as url:
        rc = main(
            [
                "eval",
                "judge",
                "--model",
                f"a={url}",
                "--model",
                f"b={url}",
                "--judge",
                url,
                "--prompts",
                str(prompts),
                "--output",
                str(tmp_path / "j"),
                "--no-progress",
            ]
        )
    err = _errors(capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "sent the reply as dict {'no': 'text'}" in err
