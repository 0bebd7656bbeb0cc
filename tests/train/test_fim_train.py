"""FIM in `starchat train`: the data.fim section, FIM tokens added like the dialogue tokens, FIM rows mixed into SFT
(middle-only loss, packed intact, counted), fim.json beside the model and its checkpoints."""

from __future__ import annotations

import json

import pytest

from starchat import fim
from starchat.data.tokenize import IGNORE_INDEX
from starchat.errors import StarchatError
from starchat.train import load_config
from starchat.train.config import ConfigError

FUNC = '''def scale{i}(xs, k):
    """Multiply each item by k."""
    out = []
    for x in xs:
        out.append(x * k)
    return out
'''


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    for i in range(30):
        (root / f"m{i:02d}.py").write_text(FUNC.format(i=i) + "\n\n" + FUNC.format(i=100 + i))
    return root


def _fim_overrides(base: dict, code_dir, **fim_keys) -> dict:
    over = dict(
        base,
        **{
            "data.fim.source": str(code_dir),
            "data.max_length": 128,
            "data.block_size": 256,
            "data.fim.max_chars": 400,
            "data.fim.rate": 0.6,
            "data.fim.share": 0.25,
        },
    )
    over.update({f"data.fim.{k}": v for k, v in fim_keys.items()})
    return over


def test_the_fim_section_reads_from_yaml_and_overrides_and_refuses_bad_values(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name_or_path: m}\ndata:\n  dataset: d\n  fim:\n    source: stdlib\n    rate: 0.7\n"
        "training: {output_dir: o}\n"
    )
    cfg = load_config(recipe, ["--data.fim.spm_rate", "0.25"])
    assert (cfg.data.fim.source, cfg.data.fim.rate, cfg.data.fim.spm_rate, cfg.data.fim.share) == (
        "stdlib",
        0.7,
        0.25,
        0.3,
    )
    with pytest.raises(ConfigError, match="unknown key 'data.fim.rat'; did you mean 'data.fim.rate'"):
        load_config(recipe, ["--data.fim.rat", "0.5"])
    with pytest.raises(ConfigError, match=r"data.fim.share must be in \(0, 1\)"):
        load_config(recipe, ["--data.fim.share", "1"])
    with pytest.raises(ConfigError, match=r"data.fim.span must be one of \('char', 'line', 'mixed'\), got 'word'"):
        load_config(recipe, ["--data.fim.span", "word"])
    with pytest.raises(ConfigError, match="data.fim is a section"):
        load_config(recipe, ["--data.fim", "x"])


def test_a_dpo_recipe_with_data_fim_is_refused_in_one_line(tmp_path):
    over = {
        "method": "dpo",
        "model.name_or_path": "m",
        "data.dataset": "d",
        "training.output_dir": "o",
        "data.fim.source": "stdlib",
    }
    with pytest.raises(ConfigError, match="data.fim mixes FIM rows into SFT; a DPO run .* remove the data.fim"):
        load_config(None, over)


def test_a_recipe_without_fim_is_the_same_run_as_before_data_fim_existed(tiny_overrides):
    from starchat.train.checkpoint import run_fingerprint

    d = load_config(None, tiny_overrides).to_dict()
    old = json.loads(json.dumps(d))
    del old["data"]["fim"]
    assert run_fingerprint(d) == run_fingerprint(old)
    d["data"]["fim"]["source"] = "stdlib"
    assert run_fingerprint(d) != run_fingerprint(old)


def test_fim_tokens_follow_the_dialogue_tokens_start_like_them_and_learn_like_them(
    make_overrides, plain_base_dir, code_dir, tmp_path
):
    from starchat.train.model import new_token_ids
    from starchat.train.run import build

    over = _fim_overrides(make_overrides(tmp_path), code_dir, **{})
    over["model.name_or_path"] = str(plain_base_dir)
    trainer, tok, stats, _ = build(load_config(None, over))
    dialogue = new_token_ids(tok, "starchat")
    added = [tok.convert_tokens_to_ids(t) for t in fim.ADDED]
    assert added == list(range(max(dialogue) + 1, max(dialogue) + 5))
    assert trainer.new_token_rows[0] == dialogue + added
    emb = trainer.model.get_input_embeddings().weight
    for i in added:  # initialised as the dialogue tokens' rows are: the mean of the base's rows
        assert emb[i].tolist() == emb[dialogue[0]].tolist()
    assert trainer.fim_spec.prefix == "<fim_prefix>" and trainer.fim_spec.eot == "<|endoftext|>"


def test_a_base_without_fim_tokens_and_adding_disabled_is_one_line(make_overrides, code_dir, tmp_path):
    from starchat.train.run import build

    over = _fim_overrides(make_overrides(tmp_path), code_dir, add_tokens=False)
    with pytest.raises(
        StarchatError,
        match=r"model.name_or_path: .*tiny-model.* has no fill-in-the-middle tokens "
        "and data.fim.add_tokens is false",
    ):
        build(load_config(None, over))


def test_a_base_with_its_own_fim_tokens_keeps_them_without_data_fim(tokenizer, tiny_overrides):
    from starchat.train.fim import prepare_fim

    tokenizer.add_special_tokens({"additional_special_tokens": ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]})
    n = len(tokenizer)
    spec, added = prepare_fim(load_config(None, tiny_overrides), tokenizer)
    assert spec.family == "starcoder" and added == [] and len(tokenizer) == n


def _segments(row):
    """(ids, labels) of each packed item of a row (position_ids restart at 0 for each)."""
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
    return [(row["input_ids"][a:b], row["labels"][a:b]) for a, b in zip(starts, starts[1:])]


def test_fim_rows_are_counted_packed_intact_and_train_only_the_middle_and_its_end(make_overrides, code_dir, tmp_path):
    from starchat.train.run import build

    trainer, tok, stats, _ = build(load_config(None, _fim_overrides(make_overrides(tmp_path), code_dir)))
    rows = stats["train_rows"]
    fim_rows = rows["fim_psm"] + rows["fim_spm"]
    assert rows["dialogue"] == 48 and rows["fim_psm"] > 0 and rows["fim_spm"] > 0 and rows["code"] > 0
    assert fim_rows + rows["code"] == 16  # share 0.25 of all rows: 48 * 0.25 / 0.75
    assert stats["train_pack"]["dialogues"] == 48 + 16
    spec = trainer.fim_spec
    pre, mid, eot = (tok.convert_tokens_to_ids(t) for t in (spec.prefix, spec.middle, spec.eot))
    seen = 0
    for row in trainer.train_dataset:
        for ids, labels in _segments(row):
            if pre not in ids:
                continue
            seen += 1
            assert ids[0] == pre and ids[-1] == eot and ids.count(pre) == 1  # whole, and alone in its segment
            trained = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
            assert trained == list(range(trained[0], len(ids)))  # one run to the end: the middle and eot
            assert ids.index(mid) < trained[0]  # nothing of the context before the middle is a target
    assert seen == fim_rows
    assert "fim" not in json.dumps(trainer.eval_dataset.column_names)  # validation: dialogues only
    assert len(trainer.eval_dataset) >= 1


@pytest.mark.slow
def test_a_fim_run_writes_fim_json_beside_the_model_and_each_checkpoint_and_counts_rows_in_the_card(
    make_overrides, code_dir, tmp_path
):
    from starchat.train import train

    over = _fim_overrides(make_overrides(tmp_path), code_dir)
    over["training.num_train_epochs"] = 1
    out = train(load_config(None, over))
    spec = fim.load_spec(out)
    assert spec.prefix == "<fim_prefix>" and spec.eot == "<|endoftext|>"
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert ckpts and all(fim.load_spec(c) == spec for c in ckpts)
    card = (out / "README.md").read_text()
    assert "- training rows: dialogue=48, fim_psm=" in card and "FIM rows (" in card
    stats = json.loads((out / "trainer_results.json").read_text())["data_stats"]
    assert stats["fim"]["rows"] == 16 and stats["train_rows"]["dialogue"] == 48
