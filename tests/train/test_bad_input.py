"""Bad input fails with a clear error before any training step, and output dirs are never mixed."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest

from starchat.errors import StarchatError
from starchat.train import load_config, train
from starchat.train.checkpoint import RUN_FILE


def _no_training_happened(over):
    from pathlib import Path

    return not (Path(over["training.output_dir"]) / "checkpoints").exists()


def test_missing_messages_column(tiny_overrides, tmp_path):
    ds = tmp_path / "ds"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list([{"text": "hi"}]), "test": datasets.Dataset.from_list([{"text": "yo"}])}
    ).save_to_disk(str(ds))
    tiny_overrides["data.dataset"] = str(ds)
    with pytest.raises(StarchatError, match=r"no column 'messages' \(columns: \['text'\]\)"):
        train(load_config(None, tiny_overrides))
    assert _no_training_happened(tiny_overrides)


def test_mismatched_messages_column(tiny_overrides, tmp_path):
    ds = tmp_path / "ds"
    rows = [{"messages": [{"speaker": "user", "text": "hi"}]}]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows)}
    ).save_to_disk(str(ds))
    tiny_overrides["data.dataset"] = str(ds)
    with pytest.raises(StarchatError, match=r"\[train\]\[0\]\.messages is not a list of \{role, content\}"):
        train(load_config(None, tiny_overrides))


def test_missing_split(tiny_overrides):
    tiny_overrides["data.test_split"] = "validation"
    with pytest.raises(
        StarchatError, match=r"data.test_split: .* has no split 'validation' \(it has \['test', 'train'\]\)"
    ):
        train(load_config(None, tiny_overrides))


def test_no_assistant_tokens_after_truncation(tiny_overrides):
    tiny_overrides["data.max_length"] = 8  # shorter than any user turn: nothing of a reply survives
    with pytest.raises(StarchatError, match="no train dialogue has assistant tokens left after truncation"):
        train(load_config(None, tiny_overrides))
    assert _no_training_happened(tiny_overrides)


def test_base_model_without_tokenizer(tiny_overrides, tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        if (tiny_model_dir / f).exists():
            shutil.copy(tiny_model_dir / f, bare / f)
    tiny_overrides["model.name_or_path"] = str(bare)
    with pytest.raises(StarchatError, match="no tokenizer could be loaded .* set model.tokenizer"):
        train(load_config(None, tiny_overrides))


def test_learning_rate_must_be_positive(tiny_overrides):
    tiny_overrides["training.learning_rate"] = 0
    with pytest.raises(StarchatError, match="learning_rate must be > 0"):
        train(load_config(None, tiny_overrides))


def test_output_dir_of_a_different_run_needs_overwrite(tiny_overrides):
    from pathlib import Path

    from starchat.train.checkpoint import claim_output_dir

    out = Path(tiny_overrides["training.output_dir"])
    first = load_config(None, tiny_overrides)
    assert claim_output_dir(out, first.to_dict(), overwrite=False) is False  # fresh
    (out / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # it trained a little
    assert claim_output_dir(out, first.to_dict(), overwrite=False) is True  # same run: resumable
    tiny_overrides["training.learning_rate"] = 1e-3
    with pytest.raises(StarchatError, match="holds a different training run.*--overwrite"):
        train(load_config(None, tiny_overrides))
    second = load_config(None, {**tiny_overrides, "training.overwrite": True})
    assert claim_output_dir(out, second.to_dict(), overwrite=True) is False
    assert (out / RUN_FILE).is_file()


def test_output_dir_with_foreign_files_is_refused(tiny_overrides):
    from pathlib import Path

    out = Path(tiny_overrides["training.output_dir"])
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StarchatError, match="files that are not a starchat training run"):
        train(load_config(None, tiny_overrides))
    assert (out / "notes.txt").read_text() == "mine"


def test_new_embedding_rows_start_at_the_mean(plain_base_dir):
    from starchat.train.config import ModelConfig
    from starchat.train.model import load_model, load_tokenizer

    mcfg = ModelConfig(name_or_path=str(plain_base_dir))
    tok = load_tokenizer(mcfg, str(plain_base_dir))
    model = load_model(mcfg, str(plain_base_dir), tok)
    w = model.get_input_embeddings().weight.detach()
    old = len(tok) - 4
    assert w.shape[0] == len(tok)
    for row in w[old:]:
        assert (row - w[:old].mean(0)).abs().max() < 1e-6
    assert model.config.use_cache is False and model.generation_config.eos_token_id == tok.eos_token_id


def test_a_run_that_failed_its_checks_does_not_block_the_fixed_run(tiny_overrides):
    tiny_overrides["data.max_length"] = 8
    with pytest.raises(StarchatError, match="no train dialogue"):
        train(load_config(None, tiny_overrides))
    from starchat.train.checkpoint import claim_output_dir

    tiny_overrides["data.max_length"] = 64  # fixed: a different config, same output_dir
    cfg = load_config(None, tiny_overrides)
    assert claim_output_dir(Path(cfg.training.output_dir), cfg.to_dict(), False) is False


def test_a_dataset_without_assistant_turns_says_so(tiny_overrides, tmp_path):
    ds = tmp_path / "ds"
    rows = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]}] * 3
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows)}
    ).save_to_disk(str(ds))
    tiny_overrides["data.dataset"] = str(ds)
    with pytest.raises(StarchatError, match="no train dialogue has an assistant turn") as e:
        train(load_config(None, tiny_overrides))
    assert "truncation" not in str(e.value)
    assert _no_training_happened(tiny_overrides)


def _bad_pairs(tmp_path, make_dpo_overrides, rows):
    from conftest import save_splits

    over = make_dpo_overrides(tmp_path)
    over["data.dataset"] = str(save_splits(tmp_path / "pairs", rows, rows))
    return over


GOOD = {
    "prompt": [{"role": "user", "content": "Add 1 and 2?"}],
    "chosen": [{"role": "assistant", "content": "3"}],
    "rejected": [{"role": "assistant", "content": "4"}],
}


@pytest.mark.parametrize(
    "row, msg",
    [
        (
            {"prompt": GOOD["prompt"], "chosen": GOOD["chosen"]},
            r"no column 'rejected' \(columns: \['prompt', 'chosen'\]\)",
        ),
        ({**GOOD, "prompt": "Add 1 and 2?"}, r"\[train\]\[0\]\.prompt: must be a list of \{role, content\} messages"),
        (
            {**GOOD, "chosen": [{"speaker": "assistant", "text": "3"}]},
            r"\[train\]\[0\]\.chosen\[0\]: a message needs 'role'",
        ),
        (
            {**GOOD, "prompt": GOOD["prompt"] + GOOD["chosen"]},
            r"\[train\]\[0\]: field 'prompt' must end with a user turn",
        ),
        (
            {**GOOD, "rejected": GOOD["rejected"] * 2},
            r"\[train\]\[0\]: field 'rejected' must be exactly one assistant reply",
        ),
        (
            {**GOOD, "chosen": [{"role": "assistant", "content": "  "}]},
            r"\[train\]\[0\]: field 'chosen' is an empty reply",
        ),
        ({**GOOD, "rejected": GOOD["chosen"]}, r"\[train\]\[0\]: fields 'chosen' and 'rejected' are the same reply"),
        # the rule `data build --kind preference` applies (check_pair): whitespace around a reply does not count
        (
            {**GOOD, "rejected": [{"role": "assistant", "content": " 3\n"}]},
            r"\[train\]\[0\]: fields 'chosen' and 'rejected' are the same reply",
        ),
        (
            {
                **GOOD,
                "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}, *GOOD["prompt"]],
            },
            r"\[train\]\[0\]: field 'prompt' has an empty assistant turn",
        ),
    ],
    ids=[
        "missing-column",
        "prompt-not-messages",
        "mistyped-message",
        "prompt-ends-with-reply",
        "two-replies",
        "empty-reply",
        "identical",
        "identical-but-whitespace",
        "empty-prompt-turn",
    ],
)
def test_bad_preference_rows_name_the_row_and_field(make_dpo_overrides, tmp_path, row, msg):
    over = _bad_pairs(tmp_path, make_dpo_overrides, [row, row])
    with pytest.raises(StarchatError, match=msg):
        train(load_config(None, over))
    assert not list((Path(over["training.output_dir"]) / "checkpoints").glob("checkpoint-*"))


def test_a_dpo_start_without_the_dialogue_tokens_is_refused_before_training(
    make_dpo_overrides, plain_base_dir, tmp_path
):
    over = make_dpo_overrides(tmp_path)
    over["model.name_or_path"] = str(plain_base_dir)
    with pytest.raises(
        StarchatError,
        match=r"lacks the dialogue tokens <\|system\|> <\|user\|> <\|assistant\|> "
        r"<\|end\|>.*method: sft",
    ):
        train(load_config(None, over))
    assert _no_training_happened(over)


def test_a_dpo_start_whose_embeddings_miss_the_dialogue_tokens_is_refused(make_dpo_overrides, plain_base_dir, tmp_path):
    """The tokenizer was prepared, the model never resized (so the tokens' rows were never trained)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.templates import prepare_tokenizer

    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(plain_base_dir).save_pretrained(half)
    prepare_tokenizer(AutoTokenizer.from_pretrained(plain_base_dir)).save_pretrained(half)
    over = make_dpo_overrides(tmp_path)
    over["model.name_or_path"] = str(half)
    with pytest.raises(StarchatError, match=r"embedding rows for a tokenizer of \d+: its dialogue tokens were never"):
        train(load_config(None, over))


@pytest.mark.parametrize("key", ["data.max_length", "dpo.max_length"])
def test_a_max_length_above_the_model_context_is_refused_before_training(
    make_overrides, make_dpo_overrides, tmp_path, key
):
    """The tiny model has 512 positions; a longer dialogue or pair was an IndexError in the middle of the run."""
    over = make_dpo_overrides(tmp_path) if key.startswith("dpo") else make_overrides(tmp_path)
    over[key] = 1024
    with pytest.raises(
        StarchatError,
        match=rf"{key}=1024 is above the context of model '.*': 512 tokens "
        r"\(n_positions in its config\); set " + key + " to 512 or less",
    ):
        train(load_config(None, over))
    assert _no_training_happened(over)


def test_a_model_config_without_a_context_length_says_what_is_assumed(tiny_overrides, caplog):
    from transformers import PretrainedConfig

    from starchat.train.run import check_context

    with caplog.at_level("WARNING", logger="starchat"):
        check_context(load_config(None, tiny_overrides), "unused", PretrainedConfig())
    expected = (
        f"model {tiny_overrides['model.name_or_path']} gives no context length in its config (none of "
        "max_position_embeddings, n_positions, n_ctx, max_seq_len, seq_length, max_sequence_length, seq_len); "
        "assuming data.max_length=64 fits"
    )
    assert [r.getMessage() for r in caplog.records if "context length" in r.getMessage()] == [expected]
