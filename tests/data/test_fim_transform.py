"""The FIM transform: character-level splits, seeded and deterministic, both orders, the middle-only mask, sources."""

import json

import pytest

from starchat import fim
from starchat.data import fim as dfim
from starchat.data.tokenize import IGNORE_INDEX
from starchat.errors import StarchatError
from starchat.templates import prepare_tokenizer

CODE = '''def mean(values):
    """The arithmetic mean of a non-empty list."""
    total = 0
    for v in values:
        total += v
    return total / len(values)
'''


@pytest.fixture
def fim_tokenizer(base_tokenizer):
    tok = prepare_tokenizer(base_tokenizer)
    return tok, fim.add_fim_tokens(tok)


def _docs(n):
    return [dfim.FimDocument(CODE.replace("mean", f"mean{i}"), f"doc{i}") for i in range(n)]


def test_split_is_character_level_and_keeps_every_character():
    cuts = set()
    for seed in range(200):
        kind, parts = dfim.plan_row(CODE, seed, rate=1.0, spm_rate=0.5)
        assert "".join(parts) == CODE
        cuts |= {len(parts[0]), len(parts[0]) + len(parts[1])}
    # cut points fall anywhere, inside words too, not only at line or token boundaries
    assert any(CODE[c - 1].isalnum() and CODE[c].isalnum() for c in cuts if 0 < c < len(CODE))
    assert len(cuts) > len(CODE) // 2


def test_rows_are_deterministic_under_a_seed_and_change_with_it(fim_tokenizer):
    tok, spec = fim_tokenizer
    ids, encode, _ = dfim.rows_for_tokenizer(tok, spec)
    a = dfim.fim_rows(_docs(20), spec, ids, encode, rate=1.0, seed=3)
    b = dfim.fim_rows(_docs(20), spec, ids, encode, rate=1.0, seed=3)
    c = dfim.fim_rows(_docs(20), spec, ids, encode, rate=1.0, seed=4)
    assert a == b and a != c


def test_both_orders_and_the_rate_and_spm_rate(fim_tokenizer):
    tok, spec = fim_tokenizer
    ids, encode, _ = dfim.rows_for_tokenizer(tok, spec)
    kinds = [r["kind"] for r in dfim.fim_rows(_docs(60), spec, ids, encode, rate=1.0, spm_rate=0.5)]
    assert {"psm", "spm"} == set(kinds)
    assert {r["kind"] for r in dfim.fim_rows(_docs(30), spec, ids, encode, rate=1.0, spm_rate=0.0)} == {"psm"}
    assert {r["kind"] for r in dfim.fim_rows(_docs(30), spec, ids, encode, rate=1.0, spm_rate=1.0)} == {"spm"}
    plain = dfim.fim_rows(_docs(10), spec, ids, encode, rate=0.0)
    assert {r["kind"] for r in plain} == {"code"}
    # a plain code row: the document then the end token, every token trained
    assert plain[0]["labels"] == plain[0]["input_ids"] == [*encode(_docs(1)[0].text), ids[spec.eot]]


@pytest.mark.parametrize("order", ["psm", "spm"])
def test_only_the_middle_and_its_end_token_are_trained(fim_tokenizer, order):
    tok, spec = fim_tokenizer
    ids, encode, _ = dfim.rows_for_tokenizer(tok, spec)
    rows = dfim.fim_rows(_docs(80), spec, ids, encode, rate=1.0, spm_rate=1.0 if order == "spm" else 0.0)
    for doc, row in zip(_docs(80), rows):
        _, (prefix, middle, suffix) = dfim.plan_row(doc.text, 0, 1.0, 1.0 if order == "spm" else 0.0)
        trained = [t for t in row["labels"] if t != IGNORE_INDEX]
        assert trained == [*encode(middle), ids[spec.eot]]
        # the untrained part is exactly the FIM context of the order (all of it, as ids)
        context = row["input_ids"][: len(row["input_ids"]) - len(trained)]
        top = fim.header_ids(spec, ids, encode)
        if order == "psm":
            want = [ids[spec.prefix], *encode(prefix), ids[spec.suffix], *encode(suffix), ids[spec.middle]]
        else:
            want = [ids[spec.prefix], ids[spec.suffix], *encode(suffix), ids[spec.middle], *encode(prefix)]
        assert context == top + want


def test_a_psm_row_s_context_is_the_prompt_a_served_request_gets(fim_tokenizer):
    # training and serving must agree token for token (the repository header included), or the model is
    # asked at serve time for a layout it never saw
    tok, spec = fim_tokenizer
    ids, encode, bos = dfim.rows_for_tokenizer(tok, spec)
    for doc, row in zip(_docs(20), dfim.fim_rows(_docs(20), spec, ids, encode, rate=1.0, spm_rate=0.0, bos=bos)):
        _, (prefix, middle, suffix) = dfim.plan_row(doc.text, 0, 1.0, 0.0)
        served = fim.build_prompt(spec, ids, encode, prefix=prefix, suffix=suffix, bos=bos).ids
        assert row["input_ids"][: len(served)] == served
        assert row["input_ids"][len(served) :] == [*encode(middle), ids[spec.eot]]


def test_line_spans_are_whole_lines_one_or_a_block_starting_on_code():
    sizes = set()
    for seed in range(200):
        _, (prefix, middle, suffix) = dfim.plan_row(CODE, seed, rate=1.0, spm_rate=0.0, span="line")
        assert prefix + middle + suffix == CODE
        assert (prefix == "" or prefix.endswith("\n")) and middle.endswith("\n") and middle.strip()
        assert middle.splitlines()[0].strip()
        sizes.add(middle.count("\n"))
    assert 1 in sizes and max(sizes) > 1


def test_mixed_spans_give_both_line_and_character_middles():
    line_aligned = []
    for seed in range(100):
        _, (prefix, middle, _) = dfim.plan_row(CODE, seed, rate=1.0, spm_rate=0.0, span="mixed")
        line_aligned.append((prefix == "" or prefix.endswith("\n")) and middle.endswith("\n"))
    assert 20 < sum(line_aligned) < 95


def test_an_unknown_span_is_refused_naming_the_key():
    with pytest.raises(StarchatError, match=r"data.fim.span must be one of .*'word'"):
        dfim.plan_row(CODE, 0, 1.0, 0.0, span="word")


def test_code_spelling_a_fim_token_is_encoded_as_text(fim_tokenizer):
    tok, spec = fim_tokenizer
    ids, encode, _ = dfim.rows_for_tokenizer(tok, spec)
    doc = dfim.FimDocument('s = "<fim_middle><|end|>"\n' * 3, "x")
    row = dfim.fim_rows([doc], spec, ids, encode, rate=1.0, spm_rate=0.0)[0]
    assert (
        row["input_ids"].count(ids[spec.middle]) == 1 and tok.convert_tokens_to_ids("<|end|>") not in row["input_ids"]
    )


def test_rows_longer_than_max_length_are_dropped_and_counted(fim_tokenizer):
    tok, spec = fim_tokenizer
    ids, encode, _ = dfim.rows_for_tokenizer(tok, spec)
    stats = dfim.FimStats()
    rows = dfim.fim_rows(
        [dfim.FimDocument("x = 1\n" * 200, "long"), *_docs(2)], spec, ids, encode, rate=1.0, max_length=120, stats=stats
    )
    assert len(rows) == 2 and stats.too_long == 1 and stats.rows == 2
    assert all(r["length"] <= 120 for r in rows)


def test_documents_from_a_folder_by_function_or_file_without_humaneval(tmp_path):
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "mod.py").write_text(CODE + "\n\nclass Box:\n    def __init__(self):\n        self.x = 1\n\n\nY = 2\n")
    # HumanEval/0's entry point: never in the FIM data, so eval infill measures what was learnt
    (src / "leak.py").write_text("def has_close_elements(numbers, threshold):\n    a = 1\n    return a\n")
    stats = dfim.FimStats()
    funcs = dfim.collect_documents(str(src), unit="function", stats=stats)
    assert sorted(d.text.split("\n")[0] for d in funcs) == ["class Box:", "def mean(values):"]
    assert stats.humaneval_overlap == 1
    files = dfim.collect_documents(str(src), unit="file")
    assert [d.text for d in files] == [(src / "mod.py").read_text()]
    cut = dfim.collect_documents(str(src), unit="file", max_chars=60)
    assert len(cut) > 1 and all(len(d.text) <= 60 for d in cut)


def test_documents_from_a_dataset_text_column_and_a_missing_column(tmp_path):
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({"content": CODE.replace("mean", f"m{i}")}) + "\n" for i in range(3)))
    from starchat.train.config import DataConfig
    from starchat.train.data import load_raw

    load = lambda src: load_raw(DataConfig(dataset=src))  # noqa: E731  (what training passes)
    docs = dfim.collect_documents(str(data), text_column="content", load=load)
    assert len(docs) == 3 and docs[0].text.startswith("def m0(")
    with pytest.raises(StarchatError, match="data.fim.text_column: .*no column 'text'"):
        dfim.collect_documents(str(data), text_column="text", load=load)


def test_a_source_that_is_not_code_is_one_line():
    with pytest.raises(StarchatError, match="data.fim.source: 'no-such-pkg-xyz' is not"):
        dfim.collect_documents("no-such-pkg-xyz")


def test_document_order_is_a_seeded_sample(tmp_path):
    src = tmp_path / "pkg"
    src.mkdir()
    for i in range(12):
        (src / f"m{i:02d}.py").write_text(CODE.replace("mean", f"f{i}"))
    first = [d.text for d in dfim.collect_documents(str(src), seed=1, limit=4)]
    assert first == [d.text for d in dfim.collect_documents(str(src), seed=1, limit=4)]
    assert first != [d.text for d in dfim.collect_documents(str(src), seed=2, limit=4)]
    assert len(set(first)) == 4  # distinct documents


def test_making_fim_rows_leaves_dialogue_tokenization_as_it_was(fim_tokenizer):
    # transformers leaves the fast tokenizer's encode_special_tokens flag set after a split_special_tokens call;
    # the validation dialogues, tokenized after the FIM rows, once lost every <|end|> to its spelling
    from starchat.data.tokenize import tokenize_batch

    tok, spec = fim_tokenizer
    dialogue = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]
    before = tokenize_batch(dialogue, tok)[0]["input_ids"]
    ids, encode, _ = dfim.rows_for_tokenizer(tok, spec)
    dfim.fim_rows(_docs(3), spec, ids, encode, rate=1.0)
    assert tokenize_batch(dialogue, tok)[0]["input_ids"] == before
    tok.backend_tokenizer.encode_special_tokens = True  # left set by any other caller: still whole
    assert tokenize_batch(dialogue, tok)[0]["input_ids"] == before
    assert before.count(tok.convert_tokens_to_ids("<|end|>")) == 3  # the empty system turn's, the user's, the reply's
