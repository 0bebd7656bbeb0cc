"""`starchat chat` through its non-interactive path: answers, history and the slash commands."""

import io
import json
import sys

import pytest

from starchat.chat import ChatSession, PipeIO
from starchat.inference import SamplingParams

FAST = SamplingParams(temperature=0, repetition_penalty=3.0, max_new_tokens=8)


def run(engine, script: str, params=FAST, system=None):
    out, err = io.StringIO(), io.StringIO()
    session = ChatSession(engine, PipeIO(io.StringIO(script), out, err), params, system)
    rc = session.run()
    return session, rc, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_piped_question_through_the_cli_on_the_default_model(monkeypatch, capsys):
    from starchat.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("Write a Python function that reverses a string\n"))
    rc = main(["chat", "--max-new-tokens", "12", "--temperature", "0", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and out.strip()


def test_system_message_and_reply_are_saved(chat_engine, tmp_path):
    f = tmp_path / "c.json"
    session, rc, out, _ = run(chat_engine, f"/system Be brief.\nhello\n/save {f}\n")
    saved = json.loads(f.read_text())
    assert rc == 0
    assert [m["role"] for m in saved] == ["system", "user", "assistant"]
    assert saved[0]["content"] == "Be brief." and saved[1]["content"] == "hello"
    assert out == saved[2]["content"] + "\n"  # stdout holds exactly the answer


def test_history_is_part_of_the_next_prompt(chat_engine):
    session, _, _, _ = run(chat_engine, "first\n/params max_new_tokens=2\nsecond\n")
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["first", "second"]
    prompt = chat_engine.decode(chat_engine.encode_prompt(session.conversation()))
    assert prompt.index("first") < prompt.index("second")


def test_reset_forgets_the_conversation_but_not_the_system_prompt(chat_engine):
    session, _, _, _ = run(chat_engine, "hello\n/reset\n", system="S")
    assert session.messages == [] and session.conversation() == [{"role": "system", "content": "S"}]


def test_retry_replaces_the_last_reply(chat_engine):
    script = "/params temperature=1 top_k=0 seed=1\nhello\n/params seed=2\n/retry\n"
    session, rc, out, _ = run(chat_engine, script)
    assert rc == 0 and [m["role"] for m in session.messages] == ["user", "assistant"]
    first, second = out.split("\n")[:2]
    assert session.messages[1]["content"] == second and first != second


def test_load_restores_a_saved_conversation(chat_engine, tmp_path):
    src = tmp_path / "in.json"
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    src.write_text(json.dumps(msgs))
    session, rc, _, _ = run(chat_engine, f"/load {src}\n")
    assert rc == 0 and session.conversation() == msgs


def test_params_changes_sampling_and_rejects_bad_values(chat_engine):
    session, rc, _, err = run(chat_engine, "/params temperature=0.7 stop=a,b seed=none\n/params top_p=7\n")
    assert (session.params.temperature, session.params.stop, session.params.seed) == (0.7, ["a", "b"], None)
    assert session.params.top_p == FAST.top_p and "top_p" in err and rc == 1


@pytest.mark.parametrize(
    "script,message",
    [
        ("/bogus\n", "unknown command /bogus: type /help"),
        ("/load /no/such.json\n", "cannot read /no/such.json"),
        ("/retry\n", "nothing to retry"),
    ],
)
def test_bad_commands_give_one_line_errors_and_the_chat_goes_on(chat_engine, script, message):
    session, rc, out, err = run(chat_engine, script + "hello\n")
    assert message in err and len(err.strip().splitlines()) == 1
    assert rc == 1 and session.messages[-1]["role"] == "assistant" and out.strip()


def test_lines_between_commands_are_one_message_and_double_slash_escapes(chat_engine):
    session, _, _, _ = run(chat_engine, "def f():\n    return 1\n\nexplain\n/reset\n//usr/bin is a path\n")
    assert session.messages[0]["content"] == "//usr/bin is a path"[1:]
    session, _, _, _ = run(chat_engine, "def f():\n    return 1\n\nexplain\n")
    assert session.messages[0]["content"] == "def f():\n    return 1\n\nexplain"


def test_help_lists_every_command(chat_engine):
    _, _, _, err = run(chat_engine, "/help\n")
    for cmd in ("/system", "/reset", "/retry", "/save", "/load", "/params", "/help"):
        assert cmd in err


def test_ctrl_c_stops_the_reply_and_keeps_the_chat(chat_engine):
    class InterruptingIO(PipeIO):
        def show_stream(self, deltas):
            for i, _ in enumerate(deltas):
                if i == 1:
                    raise KeyboardInterrupt

    params = FAST.replace(max_new_tokens=50)
    full = chat_engine.generate([{"role": "user", "content": "one"}], params).text
    err = io.StringIO()
    session = ChatSession(chat_engine, InterruptingIO(io.StringIO("one\n/params\ntwo\n"), io.StringIO(), err), params)
    assert session.run() == 0
    assert "[stopped]" in err.getvalue()
    partial = session.messages[1]["content"]
    assert partial and full.startswith(partial) and len(partial) < len(full)  # what was shown is kept
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]  # went on


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--model", "./no/such/model"], "does not exist"),
        (["--template", "nosuch"], "unknown template 'nosuch'"),
    ],
)
def test_cli_bad_model_or_template_is_one_line_and_exit_2(monkeypatch, capsys, flags, message):
    from starchat.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    assert main(["chat", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_conversation_longer_than_the_context_is_an_error_not_a_crash(chat_engine):
    long = "word " * 600  # the tiny model's context is 512 tokens
    session, rc, out, err = run(chat_engine, f"{long}\n/params max_new_tokens=2\nhi\n")
    assert "context is 512" in err and rc == 1
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["hi"]  # the long one was dropped


class _Reply:
    """A finished generation of fixed text, shaped like the engine's stream."""

    def __init__(self, text: str, finish_reason: str = "stop") -> None:
        from types import SimpleNamespace

        self.text, self.completion = text, SimpleNamespace(text=text, finish_reason=finish_reason)

    def __iter__(self):
        yield self.text

    def close(self) -> None:
        pass


class _Scripted:
    """An engine that always answers with one fixed reply."""

    def __init__(self, reply: str, finish_reason: str = "stop") -> None:
        self.reply, self.finish_reason = reply, finish_reason

    def stream(self, conversation, params, cancel=None):
        return _Reply(self.reply, self.finish_reason)


class _FailsMidReply:
    """An engine whose server goes away after ``shown`` deltas (``shown`` 0: before any text)."""

    def __init__(self, shown: int) -> None:
        self.shown, self.calls = shown, 0

    def stream(self, conversation, params, cancel=None):
        from starchat.errors import StarchatError

        self.calls += 1
        if self.calls > 1:
            return _Reply("second answer")

        class _Gen:
            completion = None

            def __iter__(gen):
                yield from ["par", "tial"][: self.shown]
                raise StarchatError("http://127.0.0.1:9/v1: the connection was closed mid-reply")

            def close(gen):
                pass

        return _Gen()


def test_a_server_failing_before_any_text_is_one_line_and_the_chat_goes_on():
    session, rc, out, err = run(_FailsMidReply(0), "first\n/help\nsecond\n")  # a command ends a piped message
    assert "error: http://127.0.0.1:9/v1: the connection was closed mid-reply" in err and rc == 1
    assert out.endswith("second answer\n")  # the next message was still answered
    turns = [(m["role"], m["content"]) for m in session.messages]
    assert turns == [("user", "second"), ("assistant", "second answer")]  # the failed one was not kept


def test_a_server_failing_mid_reply_keeps_what_was_shown_and_retry_asks_again():
    session, rc, out, err = run(_FailsMidReply(2), "first\n/retry\n")
    assert "the connection was closed mid-reply (the reply was cut here; /retry asks again)" in err and rc == 1
    assert out.startswith("partial") and out.endswith("second answer\n")
    turns = [(m["role"], m["content"]) for m in session.messages]
    assert turns == [("user", "first"), ("assistant", "second answer")]


def test_reply_with_broken_python_and_a_link_gets_warnings_on_stderr_only():
    reply = "Here:\n```python\ndef f(:\n    pass\n```\nSee https://example.invalid/docs."
    _, rc, out, err = run(_Scripted(reply), "write f\n")
    assert rc == 0 and out == reply + "\n"  # stdout is still exactly the answer
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: code block 1, line 1: Python that does not compile: invalid syntax",
        "warning: unverified link (models invent URLs): https://example.invalid/docs",
    ]


@pytest.mark.parametrize(
    "finish, says",
    [
        ("length", "the reply was cut off at the token limit (raise max_new_tokens)"),
        ("stop", "the code fence was left open (the reply ended without a closing ```)"),
    ],
)
def test_open_fence_is_cut_off_only_at_the_token_limit(finish, says):
    _, rc, _, err = run(_Scripted("Here:\n```python\nx = 1\n", finish), "q\n")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert rc == 0 and warnings == [f"warning: code block 1: not closed: {says}"]
    assert ("cut off" in warnings[0]) == (finish == "length")


def test_reply_too_deep_for_the_parser_gets_a_warning_and_the_chat_goes_on():
    reply = "```python\nx = " + "+".join(["1"] * 10_000) + "\n```"
    session, rc, out, err = run(_Scripted(reply), "write it\n/retry\n")
    assert rc == 0 and out.count(reply) == 2  # answered again after the review: it did not end the chat
    assert err.count("warning: code block 1, line 1: Python that does not compile: too deeply nested") == 2


def test_review_can_be_turned_off():
    err = io.StringIO()
    session = ChatSession(
        _Scripted("```python\ndef f(:\n```"), PipeIO(io.StringIO("q\n"), io.StringIO(), err), FAST, review=False
    )
    assert session.run() == 0 and err.getvalue() == ""


def test_review_command_needs_a_reply_first():
    _, rc, _, err = run(_Scripted("x"), "/review\n")
    assert rc == 1 and "no reply to check yet" in err


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: (tmp / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256))) and tmp / "img.png",
        lambda tmp: (
            (tmp / "latin1.json").write_bytes(b'[{"role": "user", "content": "caf\xe9"}]') and tmp / "latin1.json"
        ),
        lambda tmp: "/dev/zero",
    ],
    ids=["png", "latin1", "dev_zero"],
)
def test_load_of_a_binary_file_or_dev_zero_is_a_one_line_error(chat_engine, tmp_path, make):
    path = make(tmp_path)
    session, rc, _, err = run(chat_engine, f"/load {path}\n/system still here\n")
    assert rc == 1 and session.system == "still here"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a text file" in errors[0] and str(path) in errors[0]


def test_save_onto_a_symlink_writes_through_it(chat_engine, tmp_path):
    real = tmp_path / "real.json"
    real.write_text("[]")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    _, rc, _, _ = run(chat_engine, f"/system S\n/save {link}\n")
    assert rc == 0 and link.is_symlink() and link.resolve() == real
    assert json.loads(real.read_text()) == [{"role": "system", "content": "S"}]


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\xff\xfe\xfd", b"hello\x00\x00\x00\n"])
def test_binary_on_stdin_is_a_one_line_error(monkeypatch, capsys, tiny_model_dir, data):
    from starchat.cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    assert main(["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(err) == 1 and "error: stdin: " in err[0] and "Traceback" not in err[0]


@pytest.mark.slow
def test_a_closed_pipe_on_stdout_ends_the_chat_quietly_with_0(tiny_model_dir):
    # `starchat chat ... | head -1`: the reader went away before the answer came.
    import subprocess

    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "starchat",
            "chat",
            "--model",
            str(tiny_model_dir),
            "--max-new-tokens",
            "4",
            "--no-review",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()
    _, err = p.communicate(b"hello\n", timeout=120)
    assert p.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]


def _model_with_generation_config(src, dst, config):
    import shutil

    shutil.copytree(src, dst)
    (dst / "generation_config.json").write_text(json.dumps(config))
    return dst


def test_cli_samples_with_the_models_generation_config_unless_a_flag_is_set(
    monkeypatch, capsys, tiny_model_dir, tmp_path
):
    from starchat.cli import main

    model = _model_with_generation_config(
        tiny_model_dir,
        tmp_path / "m",
        {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "max_new_tokens": 33, "eos_token_id": 0},
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("/params\n"))
    assert main(["chat", "--model", str(model), "--top-k", "5"]) == 0
    err = capsys.readouterr().err
    # the model's values, transformers' "no penalty" for the key it left out, and the user's flag on top
    assert "temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.0, max_new_tokens=33" in err


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"bos_token_id": 0, "eos_token_id": 0}, {}),  # what save_pretrained writes for any model: no choice made
        (
            {"do_sample": False, "max_new_tokens": 64},
            {"temperature": 0.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0, "max_new_tokens": 64},
        ),
        (
            {
                "do_sample": True,
                "temperature": 0.2,
                "top_k": 50,
                "top_p": 0.95,
                "max_new_tokens": 256,
            },  # what train saves
            {"temperature": 0.2, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.0, "max_new_tokens": 256},
        ),
    ],
)
def test_saved_sampling_defaults_of_a_checkpoint(tmp_path, config, expected):
    from starchat.inference.params import saved_sampling_defaults

    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    assert saved_sampling_defaults(str(tmp_path)) == expected


def test_saved_sampling_defaults_of_a_gguf_come_from_its_metadata():
    from starchat.inference.params import resolve_sampling, saved_sampling_defaults

    meta = {
        "general.architecture": "llama",
        "general.sampling.temp": "0.6",
        "general.sampling.top_k": "40",
        "general.sampling.penalty_repeat": "1.1",
    }
    assert saved_sampling_defaults("x.gguf", meta) == {"temperature": 0.6, "top_k": 40, "repetition_penalty": 1.1}
    assert saved_sampling_defaults("x.gguf", {"general.architecture": "llama"}) == {}
    p = resolve_sampling("x.gguf", meta, temperature=0.0, top_p=None)
    assert (p.temperature, p.top_k, p.top_p, p.max_new_tokens) == (0.0, 40, 0.95, 512)
