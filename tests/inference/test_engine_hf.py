"""The transformers backend on tiny local models: stopping, seeds, streaming, batching, templates."""

import threading

import pytest

from starchat.errors import StarchatError
from starchat.inference import SamplingParams, load_engine

MSGS = [{"role": "user", "content": "How do I sort a list in Python?"}]
HOT = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=24)
# A strong repetition penalty keeps the random tiny model's greedy output varied.
GREEDY = SamplingParams(temperature=0, repetition_penalty=3.0, max_new_tokens=24)


def boundary_stop(engine, ids: list[int], text: str) -> str:
    """A 4-character string that only exists across a token boundary of ``ids`` (first such one)."""
    for k in range(1, len(ids) - 1):
        left, right = engine.decode(ids[:k]), engine.decode(ids[: k + 1])
        stop = left[-2:] + right[len(left) : len(left) + 2]
        if len(stop) == 4 and stop.isascii() and stop.isprintable() and text.find(stop) == len(left) - 2:
            return stop
    raise AssertionError(f"no clean token boundary in {text!r}")


def test_same_seed_same_text_and_stream_matches_generate(hf_engine):
    a = hf_engine.generate(MSGS, HOT.replace(seed=7))
    b = hf_engine.generate(MSGS, HOT.replace(seed=7))
    streamed = "".join(hf_engine.stream(MSGS, HOT.replace(seed=7)))
    other = hf_engine.generate(MSGS, HOT.replace(seed=8))
    assert a.text and a.token_ids == b.token_ids
    assert streamed == a.text
    assert other.token_ids != a.token_ids


def test_stop_string_spanning_tokens_cuts_the_text(hf_engine):
    full = hf_engine.generate(MSGS, GREEDY)
    stop = boundary_stop(hf_engine, full.token_ids, full.text)
    cut = hf_engine.generate(MSGS, GREEDY.replace(stop=[stop]))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert "".join(hf_engine.stream(MSGS, GREEDY.replace(stop=[stop]))) == cut.text


def test_max_new_tokens_gives_length(hf_engine):
    c = hf_engine.generate(MSGS, GREEDY.replace(max_new_tokens=5))
    assert c.finish_reason == "length" and c.completion_tokens == 5 and len(c.token_ids) == 5


def test_token_ids_and_messages_give_the_same_result(hf_engine):
    ids = hf_engine.encode_prompt(MSGS)
    assert hf_engine.generate(ids, GREEDY).text == hf_engine.generate(MSGS, GREEDY).text


def test_stops_on_end_token(always_end_model_dir):
    engine = load_engine(str(always_end_model_dir))
    end = engine.tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in engine.eos_token_ids
    c = engine.generate(MSGS, GREEDY)
    assert (c.finish_reason, c.completion_tokens, c.text) == ("stop", 1, "")
    engine.eos_token_ids = [i for i in engine.eos_token_ids if i != end]
    assert engine.generate(MSGS, GREEDY).finish_reason == "length"  # so it was <|end|> that stopped it


def test_batch_matches_one_by_one(hf_engine):
    prompts = [
        MSGS,
        [{"role": "user", "content": "def add(a, b): what does it return?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ]
    batch = hf_engine.generate_batch(prompts, GREEDY)
    single = [hf_engine.generate(p, GREEDY) for p in prompts]
    assert [c.token_ids for c in batch] == [c.token_ids for c in single]
    assert [c.prompt_tokens for c in batch] == [c.prompt_tokens for c in single]


def test_cancel_mid_stream(hf_engine):
    cancel = threading.Event()
    gen = hf_engine.stream(MSGS, GREEDY.replace(max_new_tokens=200), cancel=cancel)
    next(gen)
    cancel.set()
    rest = list(gen)
    assert gen.completion.finish_reason == "cancelled"
    assert gen.completion.completion_tokens < 200 and len(rest) <= 1


def test_starchat_checkpoint_uses_its_dialogue_template(starchat_checkpoint):
    engine = load_engine(str(starchat_checkpoint))
    assert engine.format.source.endswith("dialogue_template.json")
    prompt = engine.tokenizer.decode(engine.encode_prompt([{"role": "user", "content": "hi"}]))
    assert prompt == "<|system|>\nYou are a test assistant.<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>"
    assert engine.tokenizer.convert_tokens_to_ids("<|end|>") in engine.eos_token_ids


def test_own_chat_template_is_preferred_and_starchat_can_be_forced(tiny_model_dir, starchat_checkpoint):
    own = load_engine(str(tiny_model_dir))
    assert own.format.source == "tokenizer" and own.format.jinja
    forced = load_engine(str(starchat_checkpoint), template="starchat")
    prompt = forced.tokenizer.decode(forced.encode_prompt([{"role": "user", "content": "hi"}]))
    assert prompt.startswith("<|system|>\n<|end|>")  # ours: no system text, unlike the checkpoint's file


def test_model_without_any_template_says_how_to_fix(starchat_checkpoint, tmp_path):
    import shutil

    shutil.copytree(starchat_checkpoint, tmp_path / "m")
    (tmp_path / "m" / "dialogue_template.json").unlink()
    with pytest.raises(StarchatError, match="--template starchat"):
        load_engine(str(tmp_path / "m"))


@pytest.mark.parametrize("model,match", [("./no/such/dir", "does not exist"), ("missing.gguf", "does not exist")])
def test_missing_model_path(model, match):
    with pytest.raises(StarchatError, match=match):
        load_engine(model)


def test_bad_params_are_rejected():
    with pytest.raises(StarchatError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(StarchatError, match="unknown parameter 'tempreature'"):
        SamplingParams().update_from_string("tempreature", "1")


def test_cancel_before_generate_returns_cancelled(hf_engine):
    cancel = threading.Event()
    cancel.set()
    c = hf_engine.generate(MSGS, GREEDY.replace(max_new_tokens=50), cancel=cancel)
    assert c.finish_reason == "cancelled" and c.completion_tokens < 50


def test_batched_stop_criterion_flags_each_row_when_its_stop_string_is_complete():
    import torch

    from starchat.inference.hf import _StopStrings

    pieces = {0: "", 1: "ab", 2: "<|", 3: "st", 4: "op|>", 5: "z"}
    crit = _StopStrings(lambda ids: "".join(pieces[i] for i in ids), ["<|stop|>"], prompt_width=1)
    rows = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 1, 5, 2, 3]])
    flags = [crit(rows[:, :n], None).tolist() for n in range(2, 7)]
    assert flags == [[False, False], [False, False], [False, False], [True, False], [True, False]]


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.2, 50, 0.95), (0.7, 0, 0.9), (1.0, 10, 1.0), (0.5, 200, 0.5)])
def test_fused_sampling_keeps_what_transformers_warpers_keep(temperature, top_k, top_p):
    """_TopKTopP (one top-k, the nucleus among its candidates) = Temperature -> TopK -> TopP, value for value."""
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from starchat.inference.hf import _TopKTopP

    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 4.0):
        logits = torch.randn(3, 5000, generator=gen) * scale
        ref = TemperatureLogitsWarper(temperature)(None, logits.clone()) if temperature != 1.0 else logits.clone()
        if top_k:
            ref = TopKLogitsWarper(top_k)(None, ref)
        if top_p < 1.0:
            ref = TopPLogitsWarper(top_p)(None, ref)
        out = _TopKTopP(temperature, top_k, top_p)(None, logits.clone())
        assert torch.equal(torch.isinf(out), torch.isinf(ref))
        assert torch.equal(out[~torch.isinf(out)], ref[~torch.isinf(ref)])


def test_engine_samples_the_tokens_plain_generate_samples(hf_engine):
    """Same seed: the engine's sampling gives the tokens of model.generate with transformers' own warpers."""
    import torch

    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.0, max_new_tokens=16, seed=3)
    ids = hf_engine.prompt_ids(MSGS)
    ours = hf_engine.generate(ids, params)
    torch.manual_seed(3)
    out = hf_engine.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        max_new_tokens=16,
        eos_token_id=hf_engine.eos_token_ids,
        pad_token_id=hf_engine.pad_token_id,
    )
    theirs = out[0, len(ids) :].tolist()
    assert ours.token_ids == [t for t in theirs if t not in hf_engine.eos_token_ids][: len(ours.token_ids)]
    assert len(ours.token_ids) >= 8
