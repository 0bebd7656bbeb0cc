"""Every reader on its bundled sample, and every bad-input path with its error."""

import json
from pathlib import Path

import pytest

from starchat.data.readers import DataError, ReadOptions, ReadStats, detect_format, read_source

SAMPLES = Path(__file__).parent / "samples"


def read(path, fmt="auto", **kw):
    return list(read_source(str(path), fmt, ReadOptions(**kw)))


@pytest.mark.parametrize(
    "name, fmt, n",
    [
        ("guanaco.jsonl", "guanaco", 31),
        ("sharegpt.json", "sharegpt", 12),
        ("sharegpt.jsonl", "sharegpt", 19),
        ("messages.jsonl", "messages", 31),
        ("prompt_completion.jsonl", "alpaca", 28),
        ("alpaca.json", "alpaca", 25),
    ],
)
def test_each_format_reads_its_sample(name, fmt, n):
    auto, forced = read(SAMPLES / name), read(SAMPLES / name, fmt)
    assert len(auto) == n and [e.messages for e in auto] == [e.messages for e in forced]
    for ex in auto:
        roles = [m["role"] for m in ex.messages if m["role"] != "system"]
        assert roles[0] == "user" and roles[-1] == "assistant"


def test_formats_agree_on_the_same_dialogue():
    first = {name: read(SAMPLES / name)[0].messages for name in ("guanaco.jsonl", "messages.jsonl", "sharegpt.json")}
    assert first["guanaco.jsonl"] == first["messages.jsonl"] == first["sharegpt.json"]


def test_sharegpt_system_turn_becomes_a_system_message():
    exs = read(SAMPLES / "sharegpt.jsonl")
    multi = [e for e in exs if e.messages[0]["role"] == "system"]
    assert multi and multi[0].messages[0]["content"].startswith("You are StarChat")
    assert len(multi[0].messages) == 5


def test_alpaca_input_is_appended_to_the_instruction():
    last = read(SAMPLES / "alpaca.json")[-1]
    assert last.messages[0]["content"] == "Translate this Python to JavaScript.\n\nprint(sum([1, 2, 3]))"


def test_oasst_flat_rows_give_every_root_to_leaf_path():
    exs = read(SAMPLES / "oasst_flat.jsonl")
    # 14 English single-exchange trees + 2 German two-exchange trees; each reply has a worse-ranked
    # sibling leaf, so a tree gives 2 (resp. 3) paths. The reply marked deleted gives none.
    assert len(exs) == 14 * 2 + 2 * 3
    assert all(e.messages[-1]["role"] == "assistant" for e in exs)
    assert not any("deleted" in e.where for e in exs)


def test_oasst_best_path_only_follows_rank_zero():
    exs = read(SAMPLES / "oasst_flat.jsonl", best_path_only=True)
    assert len(exs) == 16
    assert not any("maybe search the web" in m["content"] for e in exs for m in e.messages)


def test_oasst_lang_filter():
    en, de = (
        read(SAMPLES / "oasst_flat.jsonl", lang="en", best_path_only=True),
        read(SAMPLES / "oasst_flat.jsonl", lang="de", best_path_only=True),
    )
    assert (len(en), len(de)) == (14, 2)
    assert {e.group for e in de} == {"de0", "de1"}


def test_oasst_tree_export_matches_flat_reading():
    exs = read(SAMPLES / "oasst_trees.jsonl", best_path_only=True)
    assert len(exs) == 10 and all(len(e.messages) == 2 for e in exs)
    assert len({e.group for e in exs}) == 10


def test_oasst_trailing_prompter_is_trimmed(tmp_path):
    rows = [
        {"message_id": "a", "parent_id": None, "role": "prompter", "text": "q1"},
        {"message_id": "b", "parent_id": "a", "role": "assistant", "text": "r1"},
        {"message_id": "c", "parent_id": "b", "role": "prompter", "text": "q2 without reply"},
    ]
    p = tmp_path / "o.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [e.messages for e in read(p)] == [
        [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "r1"}]
    ]


def test_folder_reads_every_file():
    names = {e.source.rsplit("/", 1)[-1] for e in read(SAMPLES)}
    assert names == {p.name for p in SAMPLES.iterdir()}


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"conversations": [{"from": "bot", "value": "x"}]}', r"bad\.jsonl:2: field 'conversations\[0\]\.from'"),
        ('{"conversations": [{"from": "human"}]}', r"bad\.jsonl:2: conversations\[0\]: missing field 'value'"),
        ('{"messages": [{"role": "user", "content": 5}]}', r"bad\.jsonl:2: field messages\[0\]\.content"),
        (
            '{"text": "hello ### Human: hi ### Assistant: yo"}',
            r"bad\.jsonl:2: field 'text' must start with '### Human:'",
        ),
        ('{"instruction": "x", "output": 7}', r"bad\.jsonl:2: field 'output' must be str"),
        ('{"prompt": "x", "completion": "y", "instruction": "z"}', r"bad\.jsonl:2: missing field 'output'"),
        ("{not json", r"bad\.jsonl:2: not valid JSON"),
        ('{"text": "no markers"}', r"bad\.jsonl:2: missing field 'messages'"),  # a file keeps its first record's format
        ('{"message_id": "m", "parent_id": null, "role": "user", "text": "x"}', r"bad\.jsonl:2: field 'role'"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, line, match):
    p = tmp_path / "bad.jsonl"
    good = (
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}'
        if "message_id" not in line
        else '{"message_id": "g", "parent_id": null, "role": "prompter", "text": "x"}'
    )
    if "conversations" in line:
        good = '{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}'
    elif "### Human" in line:
        good = '{"text": "### Human: a### Assistant: b"}'
    elif "instruction" in line or "prompt" in line:
        good = '{"instruction": "a", "output": "b"}'
    p.write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=match):
        read(p)
    stats = ReadStats()
    kept = list(read_source(str(p), "auto", ReadOptions(skip_invalid=True), stats))
    assert stats.invalid[str(p)] == 1 and stats.errors and "--skip-invalid" not in stats.errors[0]
    assert len(kept) == (1 if "message_id" not in line else 0)


def test_bad_json_file_names_the_line(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('[\n {"instruction": "a",\n  "output": }\n]')
    with pytest.raises(DataError, match=r"x\.json:3: not valid JSON"):
        read(p)


def test_missing_path_says_what_to_do():
    with pytest.raises(DataError, match="no such file or folder"):
        read("/nonexistent/file.jsonl")


def test_unknown_file_type(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read(tmp_path / "a.csv")


def test_undetectable_first_record_asks_for_format(tmp_path):
    p = tmp_path / "u.jsonl"
    p.write_text('{"question": "a", "answer": "b"}\n')
    with pytest.raises(DataError, match=r"u\.jsonl:1: cannot tell the format .* pass --format"):
        read(p)


def test_detect_format_keys():
    assert detect_format({"conversations": []}, "x") == "sharegpt"
    assert detect_format({"message_tree_id": "t", "prompt": {}}, "x") == "oasst"
    assert detect_format({"prompt": "p", "completion": "c"}, "x") == "alpaca"


def test_hub_name_goes_through_datasets_and_fails_clearly_offline():
    # conftest sets HF_HUB_OFFLINE=1: the hub path is real code, and offline it must say what happened
    with pytest.raises(
        DataError,
        match=r"starchat-test/no-such-dataset: not a local path, and loading it from the Hugging Face hub failed",
    ):
        read("starchat-test/no-such-dataset")
