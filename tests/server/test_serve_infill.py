"""Fill in the middle over HTTP: /infill (llama-server's shape), suffix on /v1/completions, and /completion with a
raw FIM prompt, on the transformers and llama.cpp backends, against tiny FIM-capable models."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from serverkit import live_server

from fimkit import STOPPER_TOKEN, make_fim_model
from starchat import fim
from starchat.inference import SamplingParams, load_engine
from starchat.server import ServerSettings, create_app
from starchat.templates import common_prefix

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
# The tiny random model repeats one token greedily; a strong penalty makes it write varied visible text.
GREEDY = {"temperature": 0, "repeat_penalty": 2.0}


@pytest.fixture(scope="session")
def fim_model_dir(base_tokenizer_dir, tmp_path_factory):
    return make_fim_model(base_tokenizer_dir, tmp_path_factory.mktemp("fim-model"), seed=1)


@pytest.fixture(scope="session")
def stopper_dir(base_tokenizer_dir, tmp_path_factory):
    return make_fim_model(base_tokenizer_dir, tmp_path_factory.mktemp("fim-stopper"), stopper=True)


def _engine(model_dir, backend, tmp_path_factory):
    if backend == "transformers":
        return load_engine(str(model_dir), backend="transformers")
    from starchat.export.gguf import export_gguf

    gguf = export_gguf(model_dir, tmp_path_factory.mktemp("fim-gguf") / f"{model_dir.name}.gguf", "f32")
    return load_engine(str(gguf), backend="llamacpp", n_threads=1, n_ctx=512)


@pytest.fixture(scope="module", params=["transformers", "llamacpp"])
def served(request, fim_model_dir, stopper_dir, tmp_path_factory):
    """(base URL, engine) for the random FIM model and (URL, engine) for the stopper, on one backend."""
    out = []
    engines = [_engine(d, request.param, tmp_path_factory) for d in (fim_model_dir, stopper_dir)]
    with (
        live_server(create_app(engines[0], ServerSettings(max_tokens_cap=64))) as a,
        live_server(create_app(engines[1], ServerSettings(max_tokens_cap=64))) as b,
    ):
        out = [(a, engines[0]), (b, engines[1])]
        yield out


def _reference(engine, n, budget=None, **parts):
    found = engine.fim()
    fp = fim.build_prompt(
        found.spec, found.ids, engine.encode_plain, budget=budget, bos=engine.encode_text(""), **parts
    )
    params = SamplingParams(temperature=0, repetition_penalty=2.0, max_new_tokens=n, stop_token_ids=found.stop_ids)
    return fp, engine.generate(fp.ids, params)


def test_infill_is_the_middle_of_the_psm_prompt_in_llama_servers_shape(served):
    url, engine = served[0]
    r = httpx.post(
        url + "/infill",
        json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "cache_prompt": True, **GREEDY},
        timeout=60,
    ).json()
    fp, ref = _reference(engine, 8, prefix=PREFIX, suffix=SUFFIX)
    assert r["content"] == ref.text
    assert r["tokens_evaluated"] == len(fp.ids) and r["tokens_predicted"] == ref.completion_tokens
    assert r["stop"] is True and r["stop_type"] == ("limit" if ref.finish_reason == "length" else "eos")
    assert r["truncated"] is False and r["generation_settings"]["n_predict"] == 8
    assert r["fim"]["budget"] == engine.context_length - 8


def test_generation_ends_at_the_fim_end_tokens(served):
    """The stopper writes Q then <fim_pad>: /infill ends there; a plain completion does not know it as an end
    (on transformers; llama.cpp counts <fim_pad> among its own end-of-generation tokens)."""
    url, engine = served[1]
    body = {"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 12, "temperature": 0, "repeat_penalty": 2.0}
    r = httpx.post(url + "/infill", json=body, timeout=60).json()
    assert (r["content"], r["tokens_predicted"], r["stop_type"]) == (STOPPER_TOKEN, 2, "eos")
    plain = httpx.post(
        url + "/v1/completions",
        json={"prompt": "x = ", "max_tokens": 12, "temperature": 0, "repetition_penalty": 2.0},
        timeout=60,
    ).json()
    pad_ends_anyway = engine.fim().ids[engine.fim().spec.pad] in engine.eos_token_ids
    assert plain["choices"][0]["finish_reason"] == ("stop" if pad_ends_anyway else "length")
    middle = httpx.post(
        url + "/v1/completions",
        json={"prompt": "x = ", "suffix": "\n", "max_tokens": 12, "temperature": 0, "repetition_penalty": 2.0},
        timeout=60,
    ).json()
    assert middle["choices"][0] == {"index": 0, "text": STOPPER_TOKEN, "finish_reason": "stop", "logprobs": None}
    spec = engine.fim().spec  # Continue's autocomplete: its template spells the FIM tokens in a raw prompt
    raw = httpx.post(
        url + "/v1/completions",
        json={
            "prompt": f"{spec.prefix}x = {spec.suffix}\n{spec.middle}",
            "max_tokens": 12,
            "temperature": 0,
            "repetition_penalty": 2.0,
        },
        timeout=60,
    ).json()
    assert (raw["choices"][0]["text"], raw["choices"][0]["finish_reason"]) == (STOPPER_TOKEN, "stop")


def test_a_raw_fim_prompt_on_completion_ends_at_the_fim_end_tokens(served):
    """Tabby's llama.cpp/completion: its prompt_template spells the FIM tokens; they are parsed and end it."""
    url, engine = served[1]
    spec = engine.fim().spec
    prompt = f"{spec.prefix}x = {spec.suffix}\n{spec.middle}"
    r = httpx.post(
        url + "/completion",
        json={
            "prompt": prompt,
            "n_predict": 12,
            "temperature": 0,
            "seed": 2**40,
            "stream": False,
            "penalty_last_n": 0,
            "presence_penalty": 0.0,
            "repeat_penalty": 2.0,
        },
        timeout=60,
    ).json()
    assert (r["content"], r["stop_type"]) == (STOPPER_TOKEN, "eos")


def test_streamed_infill_is_the_same_text_ending_with_stop_true(served):
    url, _ = served[0]
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 10, **GREEDY}
    full = httpx.post(url + "/infill", json=body, timeout=60).json()
    with httpx.stream("POST", url + "/infill", json={**body, "stream": True}, timeout=60) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert full["content"] and len(events) >= 2  # a fast model's deltas may come in one event
    assert [e["stop"] for e in events] == [False] * (len(events) - 1) + [True]
    assert "".join(e["content"] for e in events) == full["content"]
    assert events[-1]["tokens_predicted"] == full["tokens_predicted"]


def test_a_long_file_keeps_the_code_nearest_the_cursor_within_n_ctx_minus_n_predict(served):
    url, engine = served[0]
    prefix = "".join(f"x{i} = {i}\n" for i in range(300)) + "def add(a, b):\n    return "
    suffix = SUFFIX + "".join(f"y{i} = {i}\n" for i in range(300))
    r = httpx.post(
        url + "/infill",
        json={
            "input_prefix": prefix,
            "input_suffix": suffix,
            "n_predict": 16,
            "input_extra": [{"filename": "util.py", "text": "import os\n"}],
            **GREEDY,
        },
        timeout=60,
    ).json()
    budget = engine.context_length - 16
    fp, ref = _reference(
        engine, 16, budget=budget, prefix=prefix, suffix=suffix, extra=[{"filename": "util.py", "text": "import os\n"}]
    )
    assert r["truncated"] is True and r["fim"]["budget"] == budget and r["tokens_evaluated"] == len(fp.ids) <= budget
    assert r["fim"]["extra_tokens"] == 0 and r["fim"]["suffix_tokens"] <= budget // 4
    assert r["content"] == ref.text  # generated from the kept end of the prefix and start of the suffix


def test_openai_suffix_gives_the_same_middle_as_infill(served):
    url, engine = served[0]
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
    name = client.models.list().data[0].id  # the served name: the server refuses any other
    r = client.completions.create(
        model=name, prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0, extra_body={"repetition_penalty": 2.0}
    )
    fp, ref = _reference(engine, 8, prefix=PREFIX, suffix=SUFFIX)
    assert r.choices[0].text == ref.text and r.usage.prompt_tokens == len(fp.ids)
    streamed = client.completions.create(
        model=name,
        prompt=PREFIX,
        suffix=SUFFIX,
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body={"repetition_penalty": 2.0},
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == ref.text


def test_typing_reuses_the_cached_prompt_prefix(served):
    """Each keystroke resends the file; PSM puts the prefix first, so the cache holds all but the new text."""
    url, engine = served[0]
    if not hasattr(engine, "llm"):
        pytest.skip("the prompt cache is the llama.cpp slots'")
    found = engine.fim()
    typed = ["def add(a, b):\n    ret", "def add(a, b):\n    return a", "def add(a, b):\n    return a + b"]
    reused, prompts = [], []
    for prefix in typed:
        httpx.post(
            url + "/infill", json={"input_prefix": prefix, "input_suffix": SUFFIX, "n_predict": 4, **GREEDY}, timeout=60
        ).raise_for_status()
        reused.append(httpx.get(url + "/health").json()["prompt_cache"]["reused_tokens"])
        prompts.append(fim.build_prompt(found.spec, found.ids, engine.encode_plain, prefix=prefix, suffix=SUFFIX).ids)
    for i in (1, 2):
        shared = common_prefix(prompts[i - 1], prompts[i])
        assert shared > 3 and reused[i] - reused[i - 1] >= shared
    # each keystroke took the last one's sequence over (the suffix is longer than the prefix here, and 16 slots
    # were free): what was typed over does not stay in the KV cache, widening every later step's attention
    assert httpx.get(url + "/health").json()["prompt_cache"]["sequences"] == 1


def test_bad_infill_input_is_a_422_naming_the_field(served):
    url, _ = served[0]
    cases = {
        "input_extra": {"input_extra": "import os"},
        "input_extra.0.name": {"input_extra": [{"name": "a"}]},
        "input_prefix": {"input_prefix": "\ud800"},
        "n_predict": {"n_predict": -3},
        "stop": {"stop": ["a"] * 17},
        "input_extra.0.text": {"input_extra": [{"text": 5}]},
    }
    for field, body in cases.items():
        r = httpx.post(url + "/infill", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 422, (field, r.text)
        assert r.json()["error"]["param"] == field, r.text
    too_many = httpx.post(url + "/infill", json={"input_prefix": "a", "n_predict": 65})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n_predict"
    unknown = httpx.post(url + "/infill", json={"input_prefix": "a", "mirostat": 2})
    assert unknown.status_code == 400 and "mirostat" in unknown.json()["error"]["message"]


def test_a_model_without_fim_tokens_is_a_400_naming_it(tiny_engine):
    with live_server(create_app(tiny_engine)) as url:
        r = httpx.post(url + "/infill", json={"input_prefix": "a", "input_suffix": "b"})
        s = httpx.post(url + "/v1/completions", json={"prompt": "a", "suffix": "b", "max_tokens": 2})
        plain = httpx.post(url + "/v1/completions", json={"prompt": "a", "suffix": "", "max_tokens": 2})
    for resp, param in ((r, "input_prefix"), (s, "suffix")):
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param
        assert resp.json()["error"]["message"].startswith(f"{tiny_engine.model_name}: this model has no fill-in")
    assert plain.status_code == 200  # an empty suffix asks for nothing, as in OpenAI's API
