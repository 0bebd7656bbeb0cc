"""Validation loss over assistant tokens agrees with transformers' own loss on the same labels."""

import json
import math
from pathlib import Path

import pytest

from starchat.errors import StarchatError


@pytest.fixture(scope="module")
def built_data(tmp_path_factory):
    from starchat.data.build import BuildConfig, build

    out = tmp_path_factory.mktemp("data") / "built"
    build(BuildConfig(inputs=[str(Path(__file__).parents[1] / "data" / "samples")], output=str(out), test_size=0.3))
    return out


def test_loss_matches_model_loss_on_one_dialogue(built_data, tiny_model_dir):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.data.tokenize import tokenize_messages
    from starchat.eval.loss import LossConfig, eval_loss

    res = eval_loss(LossConfig(model=str(tiny_model_dir), data=str(built_data), limit=1, progress=False))
    messages = datasets.load_from_disk(str(built_data))["test"][0]["messages"]
    row = tokenize_messages(messages, AutoTokenizer.from_pretrained(tiny_model_dir), max_length=2048)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss.item()
    assert res["loss"] == pytest.approx(ref, rel=1e-4)
    assert res["perplexity"] == pytest.approx(math.exp(ref), rel=1e-4)
    assert res["assistant_tokens"] == sum(x != -100 for x in row["labels"][1:])


def test_end_token_accuracy_is_the_share_of_turn_ends_predicted(built_data, tiny_model_dir):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.data.tokenize import tokenize_messages
    from starchat.eval.loss import LossConfig, eval_loss

    res = eval_loss(LossConfig(model=str(tiny_model_dir), data=str(built_data), limit=1, progress=False))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = tokenize_messages(datasets.load_from_disk(str(built_data))["test"][0]["messages"], tok, max_length=2048)
    with torch.inference_mode():
        top = (
            AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=torch.tensor([row["input_ids"]]))
            .logits[0]
            .argmax(-1)
            .tolist()
        )
    end = tok.convert_tokens_to_ids("<|end|>")
    turn_ends = [t for t in range(1, len(row["labels"])) if row["labels"][t] == end]
    assert turn_ends  # every assistant turn's <|end|> is a label
    assert res["end_token_accuracy"] == pytest.approx(sum(top[t - 1] == end for t in turn_ends) / len(turn_ends))
    trained = [t for t in range(1, len(row["labels"])) if row["labels"][t] != -100]
    assert res["token_accuracy"] == pytest.approx(sum(top[t - 1] == row["labels"][t] for t in trained) / len(trained))


def test_batched_loss_is_finite_and_counts_all_dialogues(built_data, tiny_model_dir):
    from starchat.eval.loss import LossConfig, eval_loss

    res = eval_loss(LossConfig(model=str(tiny_model_dir), data=str(built_data), batch_size=3, progress=False))
    assert res["dialogues"] >= 2 and math.isfinite(res["loss"]) and res["loss"] > 0


def test_missing_split_is_a_clear_error(built_data, tiny_model_dir):
    from starchat.eval.loss import LossConfig, eval_loss

    with pytest.raises(StarchatError, match="no split 'validation'"):
        eval_loss(LossConfig(model=str(tiny_model_dir), data=str(built_data), split="validation", progress=False))


def test_a_base_without_dialogue_tokens_is_prepared_as_train_prepares_it(built_data, plain_base_dir, tmp_path, capsys):
    """`eval loss` on the base before fine-tuning: the loss a training run starts from (issue 16)."""
    import datasets
    import torch

    from starchat.cli import main
    from starchat.data.tokenize import tokenize_messages
    from starchat.train.config import ModelConfig
    from starchat.train.model import load_model, load_tokenizer

    out = tmp_path / "before.json"
    assert (
        main(
            [
                "eval",
                "loss",
                "--model",
                str(plain_base_dir),
                "--data",
                str(built_data),
                "--limit",
                "1",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert "has no dialogue tokens: added <|system|> <|user|> <|assistant|> <|end|>" in capsys.readouterr().out
    res = json.loads(out.read_text())
    mcfg = ModelConfig(name_or_path=str(plain_base_dir))
    tok = load_tokenizer(mcfg, str(plain_base_dir))
    model = load_model(mcfg, str(plain_base_dir), tok)  # what `starchat train` starts from
    row = tokenize_messages(datasets.load_from_disk(str(built_data))["test"][0]["messages"], tok, max_length=2048)
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss.item()
    assert res["kind"] == "loss" and res["metrics"]["loss"] == pytest.approx(ref, rel=1e-4)
