"""The Continue and Tabby configurations `starchat editor-config` prints: they parse, and the routes they name
answer the requests those editors send, on a live server with the FIM model and an API key."""

from __future__ import annotations

import json
import tomllib

import httpx
import pytest
import yaml
from serverkit import live_server

from fimkit import make_fim_model
from starchat import fim
from starchat.inference import load_engine
from starchat.server import ServerSettings, create_app, editors

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
# Continue's stop words for a StarCoder-style FIM template (more than OpenAI's 4): its autocomplete sends them all.
CONTINUE_STOPS = [
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "<file_sep>",
    "<|endoftext|>",
    "</fim_middle>",
    "</code>",
    "\n\n",
    "\r\n\r\n",
    "/src/",
    "#- coding: utf-8",
    "```",
]


@pytest.fixture(scope="module")
def fim_dir(base_tokenizer_dir, tmp_path_factory):
    return make_fim_model(base_tokenizer_dir, tmp_path_factory.mktemp("fim-editors"), seed=1)


@pytest.fixture(scope="module")
def server(fim_dir):
    engine = load_engine(str(fim_dir), backend="transformers")
    with live_server(create_app(engine, ServerSettings(api_key="sekret", model_name="starchat"))) as url:
        yield url, engine


def _psm_ids(engine):
    found = engine.fim()
    return fim.build_prompt(found.spec, found.ids, engine.encode_plain, prefix=PREFIX, suffix=SUFFIX).ids


def _events(resp) -> list[dict]:
    assert resp.status_code == 200, resp.read()
    return [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]


def test_continue_config_chats_and_autocompletes(server, fim_dir):
    url, engine = server
    cfg = yaml.safe_load(editors.render("continue", url, editors.read_model(str(fim_dir)), api_key="sekret"))
    m = cfg["models"][0]
    assert m["provider"] == "openai" and {"chat", "autocomplete"} <= set(m["roles"])
    assert m["defaultCompletionOptions"]["contextLength"] == engine.context_length
    headers = {"Authorization": f"Bearer {m['apiKey']}"}
    prompt = m["promptTemplates"]["autocomplete"].replace("{{{prefix}}}", PREFIX).replace("{{{suffix}}}", SUFFIX)
    assert engine.encode_text(prompt) == _psm_ids(engine)  # the template spells the served model's FIM format
    body = {
        "model": m["model"],
        "prompt": prompt,
        "max_tokens": 8,
        "temperature": 0.01,
        "stop": CONTINUE_STOPS,
        "stream": True,
    }
    with httpx.stream("POST", m["apiBase"] + "/completions", json=body, headers=headers, timeout=60) as r:
        chunks = _events(r)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    chat = {"model": m["model"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", m["apiBase"] + "/chat/completions", json=chat, headers=headers, timeout=60) as r:
        assert _events(r)[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_tabby_config_completes_through_llama_cpps_api_and_chats(server, fim_dir, tmp_path):
    url, engine = server
    from starchat.export.gguf import export_gguf

    gguf = export_gguf(fim_dir, tmp_path / "fim.gguf", quant="f16")
    assert editors.read_model(str(gguf)).spec == editors.read_model(str(fim_dir)).spec  # the GGUF says the same
    cfg = tomllib.loads(editors.render("tabby", url, editors.read_model(str(gguf)), api_key="sekret"))
    comp, chat = cfg["model"]["completion"]["http"], cfg["model"]["chat"]["http"]
    assert (comp["kind"], chat["kind"]) == ("llama.cpp/completion", "openai/chat")
    prompt = comp["prompt_template"].format(prefix=PREFIX, suffix=SUFFIX)
    assert engine.encode_text(prompt) == _psm_ids(engine)
    headers = {"Authorization": f"Bearer {comp['api_key']}"}
    body = {
        "seed": 2**63,
        "prompt": prompt,
        "n_predict": 8,
        "temperature": 0.1,
        "stream": True,
        "penalty_last_n": 0,
        "presence_penalty": 0.0,
    }  # Tabby's llama.cpp CompletionRequest
    for route in ("/completion", "/infill"):  # llama.cpp's routes need the key as /v1 does
        assert httpx.post(comp["api_endpoint"] + route, json={"prompt": "x"}, timeout=60).status_code == 401
    with httpx.stream("POST", comp["api_endpoint"] + "/completion", json=body, headers=headers, timeout=60) as r:
        events = _events(r)
    assert [e["stop"] for e in events][-1] is True and not any(e["stop"] for e in events[:-1])
    req = {"model": chat["model_name"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    r = httpx.post(chat["api_endpoint"] + "/chat/completions", json=req, headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


def test_the_cli_prints_the_config_and_refuses_a_model_without_fim(tiny_model_dir, capsys):
    from starchat.cli import main

    assert main(["editor-config", "tabby", "--url", "http://example:1234/"]) == 0
    cfg = tomllib.loads(capsys.readouterr().out)
    assert cfg["model"]["completion"]["http"]["api_endpoint"] == "http://example:1234"
    assert main(["editor-config", "continue", "--model", str(tiny_model_dir)]) == 2
    assert "has no fill-in-the-middle tokens" in capsys.readouterr().err
