"""The StarChat dialogue format: render, the Jinja chat template, and prepare_tokenizer."""

import json

import pytest

from starchat.templates import (
    DialogueTemplate,
    TemplateError,
    chat_template,
    end_token_id,
    get_template,
    prepare_tokenizer,
    render,
)

CARD_PROMPT = "<|system|>\n<|end|>\n<|user|>\nHow do I sort a list in Python?<|end|>\n<|assistant|>"
MULTI = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Sort a list?"},
    {"role": "assistant", "content": "Use `sorted(xs)`.\n\n```python\nys = sorted(xs)\n```"},
    {"role": "user", "content": "In place?"},
    {"role": "assistant", "content": " xs.sort()  "},
]


def test_render_matches_the_model_card_prompt():
    msgs = [{"role": "system", "content": ""}, {"role": "user", "content": "How do I sort a list in Python?"}]
    assert render(msgs, add_generation_prompt=True) == CARD_PROMPT


def test_render_without_system_uses_an_empty_system_turn():
    assert (
        render([{"role": "user", "content": "How do I sort a list in Python?"}], add_generation_prompt=True)
        == CARD_PROMPT
    )


def test_render_training_form_ends_each_turn():
    text = render(MULTI)
    assert text == (
        "<|system|>\nYou are helpful.<|end|>\n<|user|>\nSort a list?<|end|>\n"
        "<|assistant|>\nUse `sorted(xs)`.\n\n```python\nys = sorted(xs)\n```<|end|>\n"
        "<|user|>\nIn place?<|end|>\n<|assistant|>\n xs.sort()  <|end|>\n"
    )


def test_alpaca_template_as_in_the_original():
    text = render([{"role": "user", "content": "Add."}, {"role": "assistant", "content": "a+b"}], "alpaca")
    assert text.startswith("<|system|>\nBelow is an instruction that describes a task.")
    assert "### Instruction:\nAdd.<|end|>\n### Response:\na+b<|end|>\n" in text


@pytest.mark.parametrize(
    "bad, field",
    [
        ([{"role": "bot", "content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0]"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "messages[1]"),
    ],
)
def test_bad_messages_name_the_field(bad, field):
    with pytest.raises(TemplateError, match=field.replace("[", r"\[").replace("]", r"\]")):
        render(bad)


def test_unknown_template_says_what_exists():
    with pytest.raises(TemplateError, match="starchat"):
        get_template("vicuna")


def test_apply_chat_template_equals_render(tokenizer):
    for msgs in (MULTI, MULTI[1:], MULTI[:2]):
        assert tokenizer.apply_chat_template(msgs, tokenize=False) == render(msgs)
        assert tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == render(
            msgs, add_generation_prompt=True
        )
    card = [{"role": "system", "content": ""}, {"role": "user", "content": "How do I sort a list in Python?"}]
    assert tokenizer.apply_chat_template(card, tokenize=False, add_generation_prompt=True) == CARD_PROMPT


def test_generation_markers_mask_exactly_each_reply_and_its_end(tokenizer):
    out = tokenizer.apply_chat_template(MULTI, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    # split the masked tokens into runs: one run per assistant turn
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    assert [tokenizer.decode(r) for r in runs] == [MULTI[2]["content"] + "<|end|>", MULTI[4]["content"] + "<|end|>"]
    assert all(r[-1] == end for r in runs)


def test_prepare_tokenizer_adds_tokens_in_order_after_the_base_vocab(base_tokenizer):
    n = len(base_tokenizer)
    tok = prepare_tokenizer(base_tokenizer)
    assert tok.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]) == [n, n + 1, n + 2, n + 3]
    assert tok.eos_token == "<|end|>" and end_token_id(tok) == n + 3
    assert tok.pad_token == "<|endoftext|>"  # the base EOS, not a new token


def test_prepare_tokenizer_is_idempotent(base_tokenizer):
    tok = prepare_tokenizer(base_tokenizer)
    before = (len(tok), tok.chat_template, tok.eos_token, tok.pad_token, dict(tok.get_vocab()))
    prepare_tokenizer(tok)
    assert (len(tok), tok.chat_template, tok.eos_token, tok.pad_token, dict(tok.get_vocab())) == before


def test_special_tokens_are_never_split(tokenizer):
    ids = tokenizer("<|user|>\nhi<|end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|user|>")
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|end|>")


def test_starcoder_sized_vocab_gets_ids_49152_to_49155():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # StarCoder's vocabulary has 49,152 entries with <|endoftext|> at 0; fill the rest synthetically.
    vocab = {"<|endoftext|>": 0}
    vocab.update({c: i + 1 for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())})
    while len(vocab) < 49152:
        vocab[f"tok{len(vocab)}"] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    prepare_tokenizer(tok)
    assert tok.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]) == [
        49152,
        49153,
        49154,
        49155,
    ]
    assert tok.eos_token_id == 49155


def test_prepare_tokenizer_survives_save_and_reload(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.chat_template == tokenizer.chat_template and again.eos_token == "<|end|>"
    assert again.apply_chat_template(MULTI, tokenize=False) == render(MULTI)


def test_dialogue_template_json_round_trips_and_matches_the_original_fields(base_tokenizer, tmp_path):
    prepare_tokenizer(base_tokenizer, save_dir=tmp_path)
    data = json.loads((tmp_path / "dialogue_template.json").read_text())
    # the original StarChat loader reads these keys
    for key in ("system", "messages", "system_token", "user_token", "assistant_token", "end_token"):
        assert key in data
    assert data["end_token"] == "<|end|>" and data["system"] == ""
    assert DialogueTemplate.load(tmp_path) == get_template("starchat")


def test_original_checkpoint_template_without_name_loads(tmp_path):
    (tmp_path / "dialogue_template.json").write_text(
        json.dumps(
            {
                "system": "Be brief.",
                "messages": None,
                "system_token": "<|system|>",
                "user_token": "<|user|>",
                "assistant_token": "<|assistant|>",
                "end_token": "<|end|>",
            }
        )
    )
    t = DialogueTemplate.load(tmp_path)
    assert render([{"role": "user", "content": "x"}], t).startswith("<|system|>\nBe brief.<|end|>\n")


def test_broken_dialogue_template_names_the_file(tmp_path):
    (tmp_path / "dialogue_template.json").write_text('{\n  "system": ,\n}')
    with pytest.raises(TemplateError, match=r"dialogue_template.json: line 2"):
        DialogueTemplate.load(tmp_path)


def test_chat_template_rejects_unknown_roles(tokenizer):
    with pytest.raises(Exception, match="tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
    assert "generation" in chat_template()
