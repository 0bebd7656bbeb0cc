"""The FIM spec: read from vocabularies, added to a base without FIM tokens, saved, and prompts built from ids."""

import json

import pytest

from starchat import fim
from starchat.templates import prepare_tokenizer


def _vocab(*toks):
    return set(toks) | {"a", "b"}


@pytest.mark.parametrize(
    "vocab, family, sep",
    [
        (
            _vocab(
                "<fim_prefix>",
                "<fim_suffix>",
                "<fim_middle>",
                "<fim_pad>",
                "<|endoftext|>",
                "<file_sep>",
                "<repo_name>",
            ),
            "starcoder",
            "<file_sep>",
        ),
        (
            _vocab(
                "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<|endoftext|>", "<filename>", "<reponame>"
            ),
            "starcoder",
            "<filename>",
        ),
        (
            _vocab(
                "<|fim_prefix|>",
                "<|fim_suffix|>",
                "<|fim_middle|>",
                "<|fim_pad|>",
                "<|endoftext|>",
                "<|file_sep|>",
                "<|repo_name|>",
            ),
            "qwen",
            "<|file_sep|>",
        ),
        (_vocab("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>", "</s>"), "codellama", None),
        (_vocab("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|EOT|>"), "deepseek", None),
    ],
)
def test_detect_reads_each_family_from_its_vocabulary(vocab, family, sep):
    spec = fim.detect(vocab)
    assert spec.family == family and spec.file_sep == sep
    assert spec.stop[0] == spec.eot and all(t in vocab for t in spec.tokens)


def test_codellama_and_deepseek_end_at_their_own_eot():
    assert fim.detect(_vocab("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>", "</s>")).eot == "▁<EOT>"
    assert fim.detect(_vocab("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|EOT|>")).eot == "<|EOT|>"


def test_a_vocabulary_without_fim_tokens_has_no_spec(base_tokenizer):
    assert fim.FimSpec.from_tokenizer(base_tokenizer) is None
    with pytest.raises(fim.FimError, match="tiny: this model has no fill-in-the-middle tokens"):
        fim.require(None, "tiny")


def test_added_tokens_follow_the_dialogue_tokens_and_are_idempotent(base_tokenizer):
    tok = prepare_tokenizer(base_tokenizer)
    n = len(tok)
    spec = fim.add_fim_tokens(tok)
    assert [tok.convert_tokens_to_ids(t) for t in fim.ADDED] == list(range(n, n + 4))
    assert spec == fim.add_fim_tokens(tok) and len(tok) == n + 4
    assert spec.eot == "<|endoftext|>" and "<|end|>" in spec.stop
    assert fim.FimSpec.from_tokenizer(tok).prefix == "<fim_prefix>"


def test_spec_round_trips_through_fim_json_and_bad_files_name_the_field(tmp_path):
    spec = fim.detect(_vocab("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>"))
    spec.save(tmp_path)
    assert fim.load_spec(tmp_path) == spec
    (tmp_path / fim.FIM_FILE).write_text(json.dumps({**spec.to_dict(), "middle": 3}))
    with pytest.raises(fim.FimError, match="field 'middle' must be a non-empty string"):
        fim.load_spec(tmp_path)
    (tmp_path / fim.FIM_FILE).write_text("{not json")
    with pytest.raises(fim.FimError, match="not valid JSON"):
        fim.load_spec(tmp_path)


def _toy():
    """A spec with ids 1000.. and an encoder of one id per character (so budgets are countable)."""
    spec = fim.FimSpec("starcoder", "<P>", "<S>", "<M>", "<E>", "<PAD>", "<R>", "<F>", ("<E>", "<PAD>"))
    ids = {t: 1000 + i for i, t in enumerate(spec.tokens)}
    return spec, ids, lambda s: [ord(c) for c in s]


def test_psm_prompt_is_prefix_suffix_middle_with_control_text_kept_as_text():
    spec, ids, enc = _toy()
    p = fim.build_prompt(spec, ids, enc, prefix="ab<M>", suffix="cd", prompt="x")
    header = [ids["<R>"], *enc("myproject\n"), ids["<F>"], *enc("filename\n")]  # llama-server's, files or not
    assert p.ids == [*header, ids["<P>"], *enc("ab<M>x"), ids["<S>"], *enc("cd"), ids["<M>"]]
    assert not p.truncated


def test_budget_keeps_the_code_nearest_the_cursor():
    spec, ids, enc = _toy()
    p = fim.build_prompt(spec, ids, enc, prefix="0123456789" * 4, suffix="abcdefghij" * 4, budget=43)
    # 40 tokens of room: the suffix gets a quarter (10, its start), the prefix the rest (30, its end)
    assert p.truncated and (p.prefix_tokens, p.suffix_tokens) == (30, 10) and len(p.ids) == 43
    assert p.ids[1:31] == enc(("0123456789" * 4)[-30:]) and p.ids[32:42] == enc("abcdefghij")


def test_repository_context_uses_the_file_separator_and_gives_way_first():
    spec, ids, enc = _toy()
    extra = [{"filename": "util.py", "text": "def f(): pass\n"}]
    full = fim.build_prompt(spec, ids, enc, prefix="f(", suffix=")", extra=extra)
    assert full.ids[0] == ids["<R>"] and full.ids.count(ids["<F>"]) == 2 and full.extra_tokens > 0
    tight = fim.build_prompt(spec, ids, enc, prefix="f(", suffix=")", extra=extra, budget=10)
    assert (
        tight.extra_tokens == 10 - 3 - 3
        and tight.ids[-6:] == [ids["<P>"], *enc("f("), ids["<S>"], *enc(")"), ids["<M>"]][-6:]
    )


def test_training_rows_train_only_the_middle_and_its_end_in_both_orders():
    spec, ids, enc = _toy()
    top = fim.header_ids(spec, ids, enc)
    assert top == [ids["<R>"], *enc("myproject\n"), ids["<F>"], *enc("filename\n")]  # llama-server's header
    row, trained = fim.training_ids(spec, ids, enc, prefix="ab", middle="cd", suffix="ef", order="psm", bos=[7])
    assert row == [7, *top, ids["<P>"], *enc("ab"), ids["<S>"], *enc("ef"), ids["<M>"], *enc("cd"), ids["<E>"]]
    assert [r for r, t in zip(row, trained) if t] == [*enc("cd"), ids["<E>"]]
    row, _ = fim.training_ids(spec, ids, enc, prefix="ab", middle="cd", suffix="ef", order="spm")
    assert row == [*top, ids["<P>"], ids["<S>"], *enc("ef"), ids["<M>"], *enc("abcd"), ids["<E>"]]


def test_gguf_keys_are_the_ones_llama_cpp_reads():
    spec, ids, _ = _toy()
    meta = fim.gguf_metadata(spec, ids)
    assert meta["tokenizer.ggml.fim_pre_token_id"] == ids["<P>"]
    assert set(meta) == {f"tokenizer.ggml.fim_{k}_token_id" for k in ("pre", "suf", "mid", "pad", "rep", "sep")}
