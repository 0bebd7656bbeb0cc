"""End to end on a tiny model: the output directory is a model anyone can load, and it stops at <|end|>."""

from __future__ import annotations

import json

import pytest

from starchat.train import load_config, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(make_overrides, tmp_path_factory):
    over = make_overrides(tmp_path_factory.mktemp("e2e"))
    over["training.num_train_epochs"] = 8
    return train(load_config(None, over))


def test_output_dir_has_weights_tokenizer_and_generation_config(trained):
    from transformers import AutoTokenizer

    assert (trained / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(trained)
    end = tok.convert_tokens_to_ids("<|end|>")
    assert tok.eos_token == "<|end|>" and "generation" in tok.chat_template
    gen = json.loads((trained / "generation_config.json").read_text())
    assert gen["eos_token_id"] == end and gen["pad_token_id"] == tok.pad_token_id
    assert (gen["do_sample"], gen["temperature"], gen["top_k"], gen["top_p"], gen["max_new_tokens"]) == (
        True,
        0.2,
        50,
        0.95,
        256,
    )  # the card's usage values
    assert json.loads((trained / "dialogue_template.json").read_text())["end_token"] == "<|end|>"
    assert "learning_rate: 0.003" in (trained / "training_config.yaml").read_text()
    assert not (trained / ".final.tmp").exists()


def test_model_card_has_results_table_and_plot(trained):
    card = (trained / "README.md").read_text()
    assert "| Training Loss | Epoch | Step | Validation Loss |" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and "Loss" not in line]
    assert len(rows) == 8  # one evaluation per epoch
    assert (trained / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Training and validation loss](loss_curve.png)" in card


def test_validation_loss_drops_and_best_checkpoint_is_kept(trained):
    res = json.loads((trained / "trainer_results.json").read_text())
    evals = [e["eval_loss"] for e in res["log_history"] if "eval_loss" in e]
    assert evals[-1] < evals[0]
    assert res["best_eval_loss"] == pytest.approx(min(evals))
    assert all("eval_perplexity" in e for e in res["log_history"] if "eval_loss" in e)
    ends = [e["eval_end_token_accuracy"] for e in res["log_history"] if "eval_loss" in e]
    assert ends[-1] == 1.0  # greedy decoding ends every validation reply at <|end|>
    assert "End-token accuracy: 1.0000" in (trained / "README.md").read_text()


def test_pipeline_stops_at_end_token(trained):
    from transformers import pipeline, set_seed

    pipe = pipeline("text-generation", model=str(trained), device="cpu")
    prompt = "<|system|>\n<|end|>\n<|user|>\nHow do I add 3 and 4 in Python?<|end|>\n<|assistant|>"
    set_seed(0)
    # No generation arguments: the card's sampling, the length limit and the eos come from generation_config.json.
    out = pipe(prompt, return_tensors=True)
    ids = list(out[0]["generated_token_ids"])[len(pipe.tokenizer(prompt)["input_ids"]) :]
    end = pipe.tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in ids and ids.index(end) == len(ids) - 1  # generation ended on <|end|>, nothing after it


def test_output_reads_the_same_in_transformers_4(trained):
    """TGI and older vLLM load with transformers 4.x: same template, tokens, eos, logits and greedy reply."""
    from portability import assert_same_model

    seen = assert_same_model(trained)
    assert seen["eos"] == seen["end_id"] and seen["prompt"].endswith("<|end|>\n<|assistant|>")


def test_rerunning_the_finished_run_changes_nothing(trained, make_overrides, tmp_path_factory, caplog):
    """No re-evaluation, no `train_loss: 0`, no second results row: every file stays as it was."""
    over = make_overrides(trained.parent)
    over["training.num_train_epochs"] = 8
    before = {p.relative_to(trained): p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    with caplog.at_level("WARNING", logger="starchat.train.run"):
        assert train(load_config(None, over)) == trained
    assert "already holds the final model of this run; nothing to do" in caplog.text
    after = {p.relative_to(trained): p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before)


def test_card_snippet_loads_the_model_from_another_directory(trained, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    card = (trained / "README.md").read_text()
    path = card.split('pipeline("text-generation", model=')[1].split(",")[0].strip("'\"")
    assert path == str(trained.resolve())
    monkeypatch.chdir(tmp_path)
    assert AutoTokenizer.from_pretrained(path).eos_token == "<|end|>"
