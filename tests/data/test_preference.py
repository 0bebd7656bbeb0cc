"""`data build --kind preference`: every reader on its sample, the pair checks, filters and the split by prompt."""

import json
from pathlib import Path

import datasets
import pytest

from starchat.cli import main
from starchat.data.build import BuildConfig, build
from starchat.data.readers import DataError

SAMPLES = Path(__file__).parent / "samples-preference"
DIALOGUE_SAMPLES = Path(__file__).parent / "samples"


def _build(tmp_path, inputs, **kw):
    cfg = BuildConfig(inputs=[str(i) for i in inputs], output=str(tmp_path / "out"), kind="preference", **kw)
    stats = build(cfg)
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    return stats, [r for split in ("train", "test") for r in dd[split]]


def _check_shape(rows):
    for r in rows:
        assert r["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in r["chosen"]] == ["assistant"] == [m["role"] for m in r["rejected"]]
        assert r["chosen"][0]["content"] != r["rejected"][0]["content"]


@pytest.mark.parametrize(
    "name, pairs, prompt_len",
    [
        ("trl.jsonl", 9, 1),  # 10 records, one a second pair for a seen prompt (dedup by prompt)
        ("trl_implicit.jsonl", 7, 4),  # 3 multi-turn (system, user, assistant, user) + 4 single-turn
        ("text.jsonl", 6, 1),
        ("hh.jsonl", 7, 3),  # 3 two-exchange dialogues + 4 single
    ],
)
def test_each_reader_on_its_sample(tmp_path, name, pairs, prompt_len):
    stats, rows = _build(tmp_path, [SAMPLES / name])
    assert stats["kept"] == pairs
    _check_shape(rows)
    assert max(len(r["prompt"]) for r in rows) == prompt_len


def test_implicit_prompt_is_the_shared_prefix(tmp_path):
    _, rows = _build(tmp_path, [SAMPLES / "trl_implicit.jsonl"])
    multi = [r for r in rows if len(r["prompt"]) == 4]
    assert [m["role"] for m in multi[0]["prompt"]] == ["system", "user", "assistant", "user"]
    assert multi[0]["rejected"][0]["content"] == "I am not sure, maybe search the web."


def test_hh_text_is_split_into_turns(tmp_path):
    _, rows = _build(tmp_path, [SAMPLES / "hh.jsonl"])
    r = next(r for r in rows if len(r["prompt"]) == 3)
    assert [m["role"] for m in r["prompt"]] == ["user", "assistant", "user"]
    assert "Human:" not in r["chosen"][0]["content"] and "Assistant:" not in r["prompt"][1]["content"]


def test_oasst_sibling_replies_best_rank_chosen_worst_rejected(tmp_path):
    stats, rows = _build(tmp_path, [DIALOGUE_SAMPLES / "oasst_flat.jsonl"], lang="en")
    assert stats["kept"] == 14  # one pair per ranked prompter message; the German trees are left out
    _check_shape(rows)
    assert {r["rejected"][0]["content"] for r in rows} == {"I am not sure, maybe search the web."}
    _, de = _build(tmp_path / "de", [DIALOGUE_SAMPLES / "oasst_flat.jsonl"], lang="de")
    assert len(de) == 4  # two German trees of two exchanges: a pair at each prompter message
    assert sorted(len(r["prompt"]) for r in de) == [1, 1, 3, 3]
    _, trees = _build(tmp_path / "t", [DIALOGUE_SAMPLES / "oasst_trees.jsonl"])
    assert len(trees) == 10 and all(r["chosen"][0]["content"] != r["rejected"][0]["content"] for r in trees)


def test_decontamination_and_extra_columns(tmp_path):
    stats, rows = _build(tmp_path, [SAMPLES / "trl.jsonl"], decontaminate=["humaneval"])
    assert stats["dropped"] == {"exact_duplicate": 1, "humaneval_contamination": 1}
    assert set(datasets.load_from_disk(str(tmp_path / "out"))["train"].column_names) == {
        "prompt",
        "chosen",
        "rejected",
        "source",
    }


def test_split_is_by_prompt(tmp_path):
    rec = lambda q, a: {"prompt": q, "chosen": a, "rejected": "no idea"}  # noqa: E731
    rows = [rec(f"question {i}", f"answer {i}") for i in range(10)] + [rec("question 3", "another answer")]
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build(
        BuildConfig(
            inputs=[str(src)], output=str(tmp_path / "out"), kind="preference", dedup=False, near_dedup=0, test_size=0.5
        )
    )
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    sides = {s for s in ("train", "test") for r in dd[s] if r["prompt"][0]["content"] == "question 3"}
    assert len(sides) == 1 and len(dd["train"]) + len(dd["test"]) == 11


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "q", "chosen": "a"}, "missing field 'rejected'"),
        ({"prompt": [{"role": "user", "content": "q"}], "chosen": 3, "rejected": []}, "field 'chosen' must be list"),
        ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "field 'chosen' is an empty reply"),
        ({"prompt": "q", "chosen": "same", "rejected": "same "}, "are the same reply"),
        (
            {
                "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "chosen": [{"role": "assistant", "content": "x"}],
                "rejected": [{"role": "assistant", "content": "y"}],
            },
            "must end with a user turn",
        ),
        (
            {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: a"},
            "are the same reply",
        ),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, record, message):
    src = tmp_path / "bad.jsonl"
    trl = isinstance(record.get("chosen"), (list, int))
    good = {"prompt": "fine", "chosen": "yes", "rejected": "no"}
    if trl:
        good = {
            "prompt": [{"role": "user", "content": "fine"}],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
    elif "prompt" not in record:
        good = {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}
    src.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message) as e:
        build(
            BuildConfig(
                inputs=[str(src)], output=str(tmp_path / "out"), kind="preference", format="trl" if trl else "auto"
            )
        )
    assert f"{src}:2" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_skip_invalid_counts_the_bad_pairs(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"prompt": "a", "chosen": "x", "rejected": "y"},
                {"prompt": "b", "chosen": "z", "rejected": "z"},
                {"prompt": "c", "chosen": "x", "rejected": "w"},
            ]
        )
    )
    stats, rows = _build(tmp_path, [src], skip_invalid=True)
    assert stats["invalid"] == 1 and len(rows) == 2
    assert "are the same reply" in stats["invalid_examples"][0]


def test_cli_kind_preference(tmp_path, capsys):
    rc = main(
        [
            "data",
            "build",
            "--kind",
            "preference",
            "--input",
            str(SAMPLES / "text.jsonl"),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 0 and "train 5, test 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(
            [
                "data",
                "build",
                "--kind",
                "pairs",
                "--input",
                str(SAMPLES / "text.jsonl"),
                "--output",
                str(tmp_path / "x"),
            ]
        )


def test_dialogue_formats_and_tokenizer_are_refused_for_preference_data(tmp_path):
    with pytest.raises(DataError, match=r"--format .guanaco. is not one of .* \(for --kind preference\)"):
        _build(tmp_path, [SAMPLES / "text.jsonl"], format="guanaco")
    with pytest.raises(DataError, match="tokenized at training time"):
        _build(tmp_path, [SAMPLES / "text.jsonl"], tokenizer="any")
