"""The server answers only for the model it serves: its name and documented aliases, or none; other names get
OpenAI's 404 model_not_found (the official client raises NotFoundError)."""

from __future__ import annotations

import httpx
import openai
import pytest
from serverkit import SlowEngine, live_server

from starchat.server import ServerSettings, create_app
from starchat.server.model_names import served_names

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def url():
    engine = SlowEngine(delay=0.001)
    settings = ServerSettings(model_name="coder", model_aliases=("/models/coder-7b.gguf",))
    with live_server(create_app(engine, settings)) as u:
        yield u


def test_another_model_is_refused_with_openais_404(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=2)
    error = e.value.body
    assert {k: error[k] for k in ("type", "param", "code")} == {
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert error["message"].startswith("The model `gpt-4o` does not exist") and "`coder`" in error["message"]
    r = httpx.post(url + "/v1/completions", json={"model": "gpt-4o", "prompt": "def f():", "max_tokens": 2})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("name", ["coder", "slow-fake", "/models/coder-7b.gguf", "coder-7b.gguf", "coder-7b", ""])
def test_the_served_name_its_aliases_and_an_empty_name_are_answered(url, name):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(model=name, messages=MSG, max_tokens=2)
    assert r.model == "coder" and r.usage.completion_tokens == 2


def test_an_omitted_model_is_answered(url):
    r = httpx.post(url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == "coder"


def test_a_hub_id_is_answered_by_its_name_too():
    class Hub:
        model_name = "HuggingFaceH4/starchat-alpha"

    names = served_names("HuggingFaceH4/starchat-alpha", Hub())
    assert {"HuggingFaceH4/starchat-alpha", "starchat-alpha"} <= names and "starchat" not in names


def test_the_endpoint_engine_names_the_served_model(url):
    from starchat.inference import SamplingParams, load_engine

    engine = load_engine(url + "/v1")
    done = engine.generate(MSG, SamplingParams(temperature=0, max_new_tokens=2))
    assert engine.model_name == "coder" and done.completion_tokens == 2
    engine.close()


def test_build_answers_to_the_model_path_it_was_given(tiny_model_dir):
    from starchat.server import build

    app = build(str(tiny_model_dir), backend="transformers", settings=ServerSettings(model_name="served"))
    with live_server(app) as url:
        for name in (str(tiny_model_dir), tiny_model_dir.name, "served"):
            r = httpx.post(url + "/v1/chat/completions", json={"model": name, "messages": MSG, "max_tokens": 1})
            assert r.status_code == 200, (name, r.text)
        r = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 1})
        assert r.status_code == 404
