"""The official `openai` client against a live server on 127.0.0.1 serving the tiny transformers model."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import openai
import pytest
from serverkit import live_server

from starchat.inference import SamplingParams
from starchat.server import ServerSettings, create_app

# The tiny random model repeats one special token under greedy decoding with a 1.2 penalty;
# a stronger penalty makes it write varied visible text, which these tests need.
GREEDY = dict(temperature=0, extra_body={"repetition_penalty": 2.0})
MSG = [{"role": "user", "content": "How do I sort a list in Python?"}]


@pytest.fixture(scope="module")
def server(tiny_engine):
    app = create_app(
        tiny_engine, ServerSettings(max_tokens_cap=256, max_body_bytes=20_000, model_aliases=("m",))
    )  # the name these tests send
    with live_server(app) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def _reference(engine, messages, n):
    return engine.generate(messages, SamplingParams(temperature=0, repetition_penalty=2.0, max_new_tokens=n))


def test_models_lists_the_served_model(client, tiny_engine):
    ids = [m.id for m in client.models.list().data]
    assert ids == [tiny_engine.model_name]


def test_chat_matches_the_engine_and_counts_usage(client, tiny_engine):
    r = client.chat.completions.create(model=tiny_engine.model_name, messages=MSG, max_tokens=12, **GREEDY)
    ref = _reference(tiny_engine, MSG, 12)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.text and ref.text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tiny_engine.encode_prompt(MSG))
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_concurrent_requests_are_batched_without_changing_outputs(server, client, tiny_engine):
    """Different prompt lengths share forward passes (left padding); each answer is what it is alone."""
    prompts = [[{"role": "user", "content": "hi " * k}] for k in (1, 7, 3, 12, 5, 2)]
    with cf.ThreadPoolExecutor(len(prompts)) as pool:
        got = list(
            pool.map(lambda m: client.chat.completions.create(model="m", messages=m, max_tokens=16, **GREEDY), prompts)
        )
    for m, r in zip(prompts, got):
        assert r.choices[0].message.content == _reference(tiny_engine, m, 16).text
    assert httpx.get(server + "/health").json()["peak_batch"] > 1


def test_streaming_gives_the_same_text_and_ends_with_a_finish_reason(client):
    full = client.chat.completions.create(model="m", messages=MSG, max_tokens=20, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MSG, max_tokens=20, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # really streamed
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == 20


def test_stop_string_cuts_the_reply(client):
    full = client.chat.completions.create(model="m", messages=MSG, max_tokens=20, **GREEDY).choices[0].message.content
    stop = full[6:9]
    r = client.chat.completions.create(model="m", messages=MSG, max_tokens=20, stop=[stop], **GREEDY)
    assert r.choices[0].message.content == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats_and_n_gives_distinct_choices(client):
    # a penalty keeps the tiny random model off its end token, so both choices run to max_tokens
    kw = dict(
        model="m",
        messages=MSG,
        max_tokens=10,
        temperature=1.0,
        top_p=1.0,
        seed=7,
        n=2,
        extra_body={"top_k": 0, "repetition_penalty": 1.2},
    )
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.choices[0].message.content != a.choices[1].message.content
    assert a.usage.completion_tokens == 20


def test_text_completions(client, tiny_engine):
    r = client.completions.create(
        model="m", prompt="def add(a, b):", max_tokens=8, temperature=0, extra_body={"repetition_penalty": 2.0}
    )
    ref = tiny_engine.generate(
        "def add(a, b):", SamplingParams(temperature=0, repetition_penalty=2.0, max_new_tokens=8)
    )
    assert r.choices[0].text == ref.text
    assert r.usage.prompt_tokens == len(tiny_engine.encode_text("def add(a, b):"))


@pytest.mark.parametrize(
    "kw, param",
    [
        (dict(temperature=3.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(n=0), "n"),
        (dict(extra_body={"top_k": -1}), "top_k"),
        (dict(stop=[""]), "stop"),
    ],
)
def test_bad_parameters_answer_422_naming_the_field(client, kw, param):
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="m", messages=MSG, **kw)
    err = e.value.body
    assert err["type"] == "invalid_request_error" and err["param"] == param and param in err["message"]


def test_max_tokens_above_the_cap_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=MSG, max_tokens=257)
    assert e.value.body["param"] == "max_tokens" and "256" in e.value.body["message"]


def test_prompt_longer_than_the_context_is_400(client, tiny_engine):
    long = [{"role": "user", "content": "hi " * tiny_engine.context_length}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=long, max_tokens=5)
    assert e.value.body["code"] == "context_length_exceeded"


def test_bad_json_is_400_with_an_openai_error_body(server):
    r = httpx.post(
        server + "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "JSON" in r.json()["error"]["message"]


def test_oversized_body_is_413(server):
    r = httpx.post(server + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 30_000}]})
    assert r.status_code == 413 and "20000 bytes" in r.json()["error"]["message"]


def test_oversized_chunked_body_is_413(server):
    def chunks():
        for _ in range(30):
            yield b"x" * 1000

    r = httpx.post(server + "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_health_reports_the_scheduler(server):
    h = httpx.get(server + "/health").json()
    assert h["status"] == "ok" and h["scheduler"] == "continuous-batching" and h["slots"] == 16


def test_api_key_guards_v1_only(tiny_engine):
    app = create_app(tiny_engine, ServerSettings(api_key="s3cret", model_aliases=("m",)))
    with live_server(app) as url:
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.models.list()
        assert e.value.body["code"] == "invalid_api_key"
        assert httpx.post(url + "/v1/chat/completions", json={"messages": MSG}).status_code == 401
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="m", messages=MSG, max_tokens=2).usage.completion_tokens == 2
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/").status_code == 200


def test_review_endpoint_flags_broken_python_and_never_fetches_links(server):
    text = "```python\ndef f(:\n```\nDocs: http://169.254.169.254/latest/meta-data"
    r = httpx.post(server + "/v1/review", json={"text": text, "check_urls": True})
    assert r.status_code == 200
    findings = r.json()["findings"]
    assert [(f["kind"], f["block"], f["line"]) for f in findings] == [("syntax", 1, 1), ("url", None, None)]
    assert findings[1]["text"].startswith("unverified link")  # listed, not requested (no SSRF)
    assert httpx.post(server + "/v1/review", json={}).status_code == 422


def test_review_endpoint_says_cut_off_only_for_a_length_finish(server):
    text = "```python\nx = 1\n"
    said = {
        finish: httpx.post(server + "/v1/review", json={"text": text, "finish_reason": finish}).json()["findings"][0][
            "text"
        ]
        for finish in ("length", "stop", None)
    }
    assert "cut off at the token limit" in said["length"]
    assert "left open" in said["stop"] and said["stop"] == said[None] and "cut off" not in said[None]
