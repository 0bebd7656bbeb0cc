"""What a hostile or careless client sends: each gets a clear 4xx naming the field, never a 500 with internals."""

from __future__ import annotations

import httpx
import pytest
from serverkit import live_server

from starchat.server import ServerSettings, create_app
from starchat.server.run import serve

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def url(tiny_engine):
    with live_server(create_app(tiny_engine, ServerSettings())) as u:
        yield u


def _chat(url, **body):
    return httpx.post(url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 2, **body}, timeout=60)


@pytest.mark.parametrize(
    "field, value",
    [
        ("logprobs", True),
        ("top_logprobs", 3),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("response_format", {"type": "json_object"}),
        ("presence_penalty", 0.5),
        ("logit_bias", {"5": 10}),
        ("min_p", 0.1),  # not an OpenAI field either: unknown fields are refused too
    ],
)
def test_fields_we_do_not_honour_are_400_naming_them(url, field, value):
    r = _chat(url, **{field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"] and err["code"] == "unsupported_parameter"


def test_neutral_values_of_unhonoured_fields_are_accepted(url):
    r = _chat(
        url,
        logprobs=False,
        tools=[],
        tool_choice="none",
        presence_penalty=0,
        frequency_penalty=0.0,
        response_format={"type": "text"},
        user="u1",
    )
    assert r.status_code == 200, r.text


def test_unhonoured_message_fields_are_400_naming_them(url):
    r = httpx.post(
        url + "/v1/chat/completions",
        timeout=60,
        json={
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]},
            ]
        },
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.1.tool_calls"


@pytest.mark.parametrize(
    "content, where",
    [
        (["just a string"], "messages.0.content"),
        ([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}], "messages.0.content"),
        ([{"type": "text", "text": 5}], "messages.0.content"),
        (7, "messages.0.content"),
    ],
)
def test_content_of_the_wrong_type_is_422_naming_the_field(url, content, where):
    r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]}, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == where


def test_text_parts_are_joined(url, tiny_engine):
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": parts}], "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == len(tiny_engine.encode_prompt(MSG))


@pytest.mark.parametrize(
    "path, body, where",
    [
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages.0.content"),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "a"}], "stop": ["\\udfff"]}', "stop"),
        ("/v1/completions", '{"prompt": "x\\ud83d"}', "prompt"),
    ],
)
def test_a_lone_surrogate_is_422_naming_the_field(url, path, body, where):
    r = httpx.post(url + path, content=body.encode(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == where and "surrogate" in r.json()["error"]["message"]


def test_an_empty_completions_prompt_is_400(url):
    for prompt in ("", [""]):
        r = httpx.post(url + "/v1/completions", json={"prompt": prompt}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text


def test_stop_strings_are_bounded_at_validation(url):
    r = _chat(url, stop=["x" * 5000])
    assert r.status_code == 422 and r.json()["error"]["param"] == "stop"
    assert _chat(url, stop=["x" * 1000, "y" * 1000]).status_code == 200


def test_a_500_answer_holds_no_exception_text(tiny_engine):
    app = create_app(tiny_engine, ServerSettings())

    def boom(*a, **k):
        raise RuntimeError("/home/alice/secret-model-path exploded")

    app.state.scheduler.submit = boom
    with live_server(app) as u:
        r = _chat(u)
    assert r.status_code == 500
    assert "secret" not in r.text and "RuntimeError" not in r.text and r.json()["error"]["type"] == "server_error"


def test_with_an_api_key_docs_are_off_and_health_says_little(tiny_engine):
    with live_server(create_app(tiny_engine, ServerSettings(api_key="k"))) as u:
        assert httpx.get(u + "/docs").status_code == 404
        assert httpx.get(u + "/openapi.json").status_code == 404
        public = httpx.get(u + "/health")
        assert public.status_code == 200 and public.json() == {"status": "ok"}
        full = httpx.get(u + "/health", headers={"Authorization": "Bearer k"}).json()
        assert full["model"] == tiny_engine.model_name and full["slots"] == 16


def test_without_a_key_docs_stay_on(url):
    assert httpx.get(url + "/openapi.json").status_code == 200


@pytest.mark.parametrize(
    "host, key, warned",
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("192.168.1.5", None, True),
        ("myhost", None, True),
        ("0.0.0.0", "k", False),
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
    ],
)
def test_serving_beyond_loopback_without_a_key_warns(monkeypatch, capsys, host, key, warned):
    import uvicorn

    import starchat.server.run as run

    class App:
        class state:
            class engine:
                model_name = "m"

    monkeypatch.setattr(run, "build", lambda *a, **k: App)
    monkeypatch.setattr(run, "uvicorn_config", lambda *a, **k: None)
    monkeypatch.setattr(uvicorn, "Server", lambda config: type("S", (), {"run": lambda self: None})())
    serve(settings=ServerSettings(host=host, api_key=key))
    err = capsys.readouterr().err
    assert ("without --api-key" in err) is warned


def test_sampling_params_refuse_what_no_backend_takes():
    from starchat.errors import StarchatError
    from starchat.inference import SamplingParams

    for bad in (dict(seed=2**64), dict(seed=-1), dict(seed=True), dict(stop=["x" * 5000])):
        with pytest.raises(StarchatError, match="seed|stop"):
            SamplingParams(**bad)
    assert SamplingParams(seed=2**32 - 1).seed == 2**32 - 1
