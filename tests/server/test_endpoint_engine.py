"""The endpoint engine (`load_engine("http://.../v1")`, on the openai client) against a live `starchat serve`
and against a tiny scripted HTTP server that fails, refuses fields or answers garbage."""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serverkit import live_server

from starchat.errors import StarchatError
from starchat.inference import SamplingParams, load_engine
from starchat.inference.endpoint import PartialBatchError
from starchat.server import ServerSettings, create_app

# As in test_serve_openai_api: greedy with a strong penalty makes the tiny random model write varied text.
GREEDY = SamplingParams(temperature=0, repetition_penalty=2.0, max_new_tokens=12)
PROMPTS = [[{"role": "user", "content": "hi " * k}] for k in (1, 6, 3)]


@pytest.fixture(scope="module")
def server(tiny_engine):
    with live_server(create_app(tiny_engine, ServerSettings(max_tokens_cap=256))) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def remote(server):
    engine = load_engine(server, notify=NOTES.append)
    yield engine
    engine.close()


NOTES: list[str] = []


def test_model_name_and_context_come_from_v1_models(remote, tiny_engine):
    assert remote.model_name == tiny_engine.model_name
    assert remote.context_length == tiny_engine.context_length


def test_batch_matches_the_local_engine_with_finish_reasons(remote, tiny_engine):
    got = remote.generate_batch(PROMPTS, GREEDY)
    for messages, c in zip(PROMPTS, got):
        ref = tiny_engine.generate(messages, GREEDY)
        assert c.text == ref.text and c.text
        assert c.finish_reason == ref.finish_reason == "length"
        assert c.completion_tokens == 12
    assert NOTES == []  # our server implements top_k and repetition_penalty: nothing reported


class _Paced:
    """The tiny model, 10 ms per forward pass (a sleep, which lets go of the GIL): the server streams faster
    than it generates, so its deltas are not merged (a client that falls behind gets the missed text in one)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def eval(self):
        return self

    def __call__(self, *args, **kwargs):
        time.sleep(0.01)
        return self._model(*args, **kwargs)


def test_stream_gives_the_same_text_and_stop_strings_pass_through(remote, tiny_engine):
    ref = tiny_engine.generate(PROMPTS[1], GREEDY).text
    paced = copy.copy(tiny_engine)
    paced.model = _Paced(tiny_engine.model)
    with live_server(create_app(paced, ServerSettings())) as url:
        engine = load_engine(url + "/v1")
        gen = engine.stream(PROMPTS[1], GREEDY)
        deltas = list(gen)
        engine.close()
    assert "".join(deltas) == ref and len(deltas) > 3
    assert gen.completion.finish_reason == "length" and gen.completion.completion_tokens == 12
    stop = ref[5:8]
    cut = remote.generate(PROMPTS[1], GREEDY.replace(stop=[stop]))
    assert cut.text == ref[: ref.index(stop)] and cut.finish_reason == "stop"


def test_seed_passes_through(remote):
    p = SamplingParams(temperature=1.0, top_k=0, repetition_penalty=2.0, max_new_tokens=10, seed=3)
    assert remote.generate(PROMPTS[0], p).text == remote.generate(PROMPTS[0], p).text


def test_token_ids_and_prefill_are_refused(remote):
    with pytest.raises(StarchatError, match="--prefill .* not available for endpoints"):
        remote.generate([1, 2, 3], GREEDY)


def test_wrong_api_key_is_one_line_saying_what_to_do(tiny_engine):
    app = create_app(tiny_engine, ServerSettings(api_key="secret"))
    with live_server(app) as url:
        with pytest.raises(StarchatError, match=r"refused the API key \(401\): pass --api-key"):
            load_engine(url + "/v1", api_key="wrong")
        assert load_engine(url + "/v1", api_key="secret").model_name == tiny_engine.model_name


@pytest.mark.timing
def test_endpoint_that_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    with pytest.raises(StarchatError, match=r"cannot reach http://127.0.0.1:\d+/v1 .*is the server running"):
        load_engine(f"http://127.0.0.1:{port}/v1")
    assert time.monotonic() - t0 < 10


# ---- a scripted server --------------------------------------------------------------------------


class Script:
    """What the fake server does: fail the first ``fail`` chat requests with ``status``, refuse fields, etc."""

    def __init__(self, fail=0, status=503, refuse=(), body=None, always_fail=()):
        self.fail, self.status, self.refuse, self.body = fail, status, set(refuse), body
        self.always_fail = set(always_fail)  # messages (or, over 3 characters, parts of them) that always fail
        self.requests: list[dict] = []
        self.lock = threading.Lock()


def _handler(script: Script):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, obj, raw=None):
            data = raw if raw is not None else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(
                200,
                {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "me"}]},
            )

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append(req)
                failing = script.fail > 0 and req.get("max_tokens") != 1  # knob probes are not counted
                script.fail -= failing
                content = req.get("messages", [{}])[-1].get("content", "")
                failing = failing or any(s == content or len(s) > 3 and s in content for s in script.always_fail)
            if failing:
                return self._send(script.status, {"error": {"message": "overloaded", "type": "server_error"}})
            refused = sorted(script.refuse & set(req))
            if refused:
                return self._send(
                    400,
                    {
                        "error": {
                            "message": f"Unrecognized request argument supplied: {refused[0]}",
                            "type": "invalid_request_error",
                        }
                    },
                )
            if script.body is not None:
                return self._send(200, None, raw=script.body)
            text = req["messages"][-1]["content"].upper()
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "fake-model",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length" if req.get("max_tokens") == 1 else "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                },
            )

    return H


@contextlib.contextmanager
def scripted(script: Script):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


PLAIN = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=5)


def test_503s_are_retried_with_backoff_then_answered():
    script = Script(fail=2)
    with scripted(script) as url:
        engine = load_engine(url)
        assert engine.generate([{"role": "user", "content": "abc"}], PLAIN).text == "ABC"
    assert sum(r["messages"][0]["content"] == "abc" for r in script.requests) == 3  # 2 failures, then the answer


def test_503s_beyond_the_retries_say_so_and_keep_the_finished_requests():
    script = Script(always_fail={"b"})
    with scripted(script) as url:
        engine = load_engine(url, max_retries=1, concurrency=2)
        with pytest.raises(PartialBatchError, match=r"still answered 503 after 1 retries.*2 of 3 requests") as e:
            engine.generate_batch([[{"role": "user", "content": c}] for c in "abc"], PLAIN)
    assert [c.text if c else None for c in e.value.completions] == ["A", None, "C"]
    assert sum(r["messages"][0]["content"] == "b" for r in script.requests) == 2  # tried, retried once


def test_knobs_go_as_extra_body_and_an_ignoring_server_is_reported_once():
    notes: list[str] = []
    script = Script()
    with scripted(script) as url:
        engine = load_engine(url, notify=notes.append)
        p = SamplingParams(temperature=0.5, top_k=40, repetition_penalty=1.3, max_new_tokens=5, seed=7, stop=["\n\n"])
        for _ in range(3):
            engine.generate([{"role": "user", "content": "x"}], p)
    probes = [r for r in script.requests if r.get("max_tokens") == 1]
    assert sorted(k for r in probes for k in ("top_k", "repetition_penalty") if k in r) == [
        "repetition_penalty",
        "top_k",
    ]
    assert len(notes) == 2 and all("ignores it" in n for n in notes)
    real = [r for r in script.requests if r.get("max_tokens") == 5]
    assert real[0]["seed"] == 7 and real[0]["stop"] == ["\n\n"] and real[0]["temperature"] == 0.5
    assert all("top_k" not in r and "repetition_penalty" not in r for r in real)  # ignored: no longer sent


def test_a_server_refusing_a_field_by_name_gets_it_dropped_and_reported():
    notes: list[str] = []
    script = Script(refuse={"top_k"})
    with scripted(script) as url:
        engine = load_engine(url, notify=notes.append)
        p = SamplingParams(temperature=0.5, top_k=40, repetition_penalty=1.0, max_new_tokens=5)
        assert engine.generate([{"role": "user", "content": "ok"}], p).text == "OK"
    assert notes == [f"{url} refuses it: top_k is not applied there, so sampling differs from a local run"]


def test_malformed_body_is_one_line():
    with scripted(Script(body=b'{"unexpected": true}')) as url:
        engine = load_engine(url)
        with pytest.raises(StarchatError, match="malformed body"):
            engine.generate([{"role": "user", "content": "x"}], PLAIN)


# ---- the commands ---------------------------------------------------------------------------------


def test_eval_humaneval_through_the_endpoint_gives_the_local_results(server, tiny_engine, tmp_path, capsys):
    from starchat.cli import main
    from starchat.eval.humaneval import HumanEvalConfig, run_model

    out = tmp_path / "remote"
    assert (
        main(
            [
                "eval",
                "humaneval",
                "--model",
                server,
                "--limit",
                "3",
                "--temperature",
                "0",
                "--max-new-tokens",
                "8",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    # batch_size 1: the server decodes each request as the engine does alone (its padded batches may differ)
    local = run_model(
        tiny_engine,
        HumanEvalConfig(
            output=tmp_path / "local", limit=3, temperature=0, batch_size=1, max_new_tokens=8, progress=False
        ),
        "local",
    )
    rows = lambda d: [json.loads(x) for x in (d / "samples.jsonl").open()]  # noqa: E731
    assert [(r["raw"], r["finish_reason"]) for r in rows(out)] == [
        (r["raw"], r["finish_reason"]) for r in rows(tmp_path / "local")
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == f"{tiny_engine.model_name} at {server}" and summary["kind"] == "humaneval"
    assert summary["pass_at_k"] == local["pass_at_k"]


def test_prefill_and_template_are_refused_for_endpoints(capsys):
    from starchat.cli import main

    assert main(["eval", "humaneval", "--model", "http://127.0.0.1:9/v1", "--prefill", "--no-progress"]) == 2
    assert "--prefill writes the start of the answer in the model's own chat format" in capsys.readouterr().err
    with pytest.raises(StarchatError, match="applies its own chat format; drop --template"):
        load_engine("http://127.0.0.1:9/v1", template="starchat")
    assert main(["chat", "--served-model", "m"]) == 2  # endpoint options without an endpoint
    assert "--served-model applies to an endpoint" in capsys.readouterr().err


def test_chat_through_the_endpoint(server, tiny_engine):
    import io

    from starchat.chat import chat

    out, err = io.StringIO(), io.StringIO()
    script = "/params temperature=0 repetition_penalty=2.0 max_new_tokens=8\nhi\n"
    assert chat(server, stdin=io.StringIO(script), stdout=out, stderr=err, interactive=False, review=False) == 0
    ref = tiny_engine.generate(
        [{"role": "user", "content": "hi"}], SamplingParams(temperature=0, repetition_penalty=2.0, max_new_tokens=8)
    ).text
    assert ref.strip() and out.getvalue().strip() == ref.strip()


def test_a_failed_batch_keeps_its_finished_samples_and_the_rerun_resumes(tmp_path):
    from starchat.eval.humaneval import HumanEvalConfig, run_model
    from starchat.eval.programs import load_problems

    problems = load_problems(limit=3)
    script = Script(always_fail={problems["HumanEval/1"]["prompt"].strip()[:60]})
    cfg = HumanEvalConfig(output=tmp_path / "run", limit=3, batch_size=3, temperature=0, progress=False)
    with scripted(script) as url:
        engine = load_engine(url, max_retries=0)
        with pytest.raises(StarchatError, match="2 of 3 requests.*rerun the same command to resume"):
            run_model(engine, cfg, "fake")
        assert sorted(json.loads(x)["task_id"] for x in (cfg.output / "samples.jsonl").open()) == [
            "HumanEval/0",
            "HumanEval/2",
        ]
        script.always_fail.clear()
        before = len(script.requests)
        summary = run_model(engine, cfg, "fake")
    assert summary["num_samples"] == 3 and len(script.requests) - before == 1  # only the missing one
