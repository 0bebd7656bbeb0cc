"""/infill on the vLLM backend, against the stand-in vLLM (tests/inference/test_vllm_mapping.py): the PSM prompt
goes in as token ids (vLLM's TokensPrompt) and the FIM end tokens as stop_token_ids."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fimkit import make_fim_model
from inference.test_vllm_mapping import fake_vllm  # noqa: F401  (the stand-in vllm package, as a fixture)
from starchat import fim
from starchat.server import create_app


@pytest.fixture(scope="module")
def fim_dir(base_tokenizer_dir, tmp_path_factory):
    return make_fim_model(base_tokenizer_dir, tmp_path_factory.mktemp("fim-vllm"))


def test_infill_hands_vllm_the_psm_ids_and_the_fim_end_ids(fake_vllm, fim_dir):  # noqa: F811
    from starchat.inference.vllm import VLLMEngine

    engine = VLLMEngine(str(fim_dir))
    core, seen = engine.engine, []
    add = core.add_request
    core.add_request = lambda rid, prompt, params: (seen.append((prompt, params)), add(rid, prompt, params))
    with TestClient(create_app(engine)) as client:
        r = client.post("/infill", json={"input_prefix": "def f(", "input_suffix": "):\n", "n_predict": 3})
        s = client.post("/v1/completions", json={"prompt": "def f(", "suffix": "):\n", "max_tokens": 2})
    assert r.status_code == 200 and s.status_code == 200, (r.text, s.text)
    found = engine.fim()
    ids = fim.build_prompt(found.spec, found.ids, engine.encode_plain, prefix="def f(", suffix="):\n").ids
    for prompt, params in seen:
        assert prompt == {"prompt_token_ids": ids}
        assert set(found.stop_ids) <= set(params.stop_token_ids) and set(engine.eos_token_ids) <= set(
            params.stop_token_ids
        )
    assert (r.json()["tokens_predicted"], r.json()["stop_type"], r.json()["tokens_evaluated"]) == (3, "limit", len(ids))
    assert s.json()["choices"][0]["finish_reason"] == "length"
