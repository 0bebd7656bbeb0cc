"""Tokenization with the loss mask built together with the tokens.

A dialogue is rendered once into segments whose character spans say which text is trained (each
assistant reply plus its end token, see ``starchat.templates.render_segments``). One call of the
fast tokenizer with offsets then gives the tokens, and a token is trained when its characters
fall in a trained span. Nothing is split and re-tokenized, every assistant turn is covered, and
a whole batch goes through the tokenizer's parallel Rust encoder at once.

Truncation policy (``max_length``), counted in ``truncated`` tokens:

- ``turns`` (default): keep the longest prefix of whole exchanges (user turn + reply) that fits;
  if even the first exchange does not fit, cut it at ``max_length`` (its reply is then trained
  without an end token).
- ``cut``: cut at ``max_length`` wherever that falls.
- ``drop``: drop dialogues longer than ``max_length``.

A dialogue left with no trained token is dropped and counted as ``no_assistant_tokens``.

Control-token text in message content (a user pasting ``<|end|>`` or ``<|endoftext|>``) is encoded as
plain text, never as the control token, as the inference engines do: otherwise a message could end its
turn early or spell another role's header, and the mask would train on it. Such dialogues (rare) are
encoded piecewise: the content's control-token text alone with the tokenizer's ``encode_special_tokens``,
the rest as usual; they are counted in ``control_text_dialogues``. What it does not cover: added tokens
that are not special (the tokenizer matches those in any text, as it does at inference).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from starchat.errors import StarchatError
from starchat.templates import get_template, render_segments

IGNORE_INDEX = -100  # the label value that PyTorch's cross-entropy (and transformers) skip
TRUNCATION = ("turns", "cut", "drop")


def _spans(segments: list[tuple[str, bool]]) -> tuple[str, list[tuple[int, int]], list[int]]:
    """The text, its trained character spans, and the character offsets where each exchange ends."""
    text, spans, ends, pos = [], [], [], 0
    for i, (seg, trained) in enumerate(segments):
        if trained:
            spans.append((pos, pos + len(seg)))
        pos += len(seg)
        text.append(seg)
        if trained:
            # the exchange ends after the separator that follows the reply (if there is one)
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            ends.append(pos + (len(nxt[0]) if nxt is not None and not nxt[1] else 0))
    return "".join(text), spans, ends


def _control_pattern(tokenizer) -> re.Pattern | None:
    """A regex of the tokenizer's special (control) tokens' text, longest first; None if it has none."""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special and t.content}
    if not specials:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))


def _literal_runs(dialogue, tmpl, pattern: re.Pattern, text: str) -> list[tuple[int, int]]:
    """Character ranges of ``text`` (the rendered dialogue) that message content spelled as control tokens.

    The dialogue is rendered again with each such match replaced by as many NUL characters, so every
    position keeps its place; the ranges are where the two renderings differ."""
    masked = [{**m, "content": pattern.sub(lambda x: "\0" * len(x.group()), m["content"])} for m in dialogue]
    other = "".join(seg for seg, _ in render_segments(masked, tmpl))
    runs: list[tuple[int, int]] = []
    for i, (a, b) in enumerate(zip(text, other)):
        if a != b:
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
    return runs


def _encode_pieces(backend, text: str, literal: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and offsets of ``text`` with the ``literal`` ranges encoded as plain text (control tokens not matched)."""
    pieces, pos = [], 0
    for a, b in literal:
        pieces += [(pos, a, False)] if pos < a else []
        pieces.append((a, b, True))
        pos = b
    pieces += [(pos, len(text), False)] if pos < len(text) else []
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    before = backend.encode_special_tokens
    try:
        for a, b, as_text in pieces:
            backend.encode_special_tokens = as_text
            enc = backend.encode(text[a:b], add_special_tokens=False)
            ids += enc.ids
            offsets += [(s + a, e + a) for s, e in enc.offsets]
    finally:
        backend.encode_special_tokens = before
    return ids, offsets


def _labels(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Labels: the token id where the token's characters overlap a trained span, else IGNORE_INDEX.

    One sweep over tokens and spans together (both are sorted by position).
    """
    labels = [IGNORE_INDEX] * len(ids)
    k, n_spans = 0, len(spans)
    for i, (s, e) in enumerate(offsets):
        while k < n_spans and spans[k][1] <= s:
            k += 1
        if k == n_spans:
            break
        a, b = spans[k]
        # an empty offset (a whitespace token whose span was trimmed) counts by its position
        if (s < b and e > a) or (s == e and a <= s < b):
            labels[i] = ids[i]
    return labels


def _truncate(
    ids: list[int], labels: list[int], offsets, ends: list[int], max_length: int | None, truncation: str
) -> tuple[list[int], list[int], int] | None:
    n = len(ids)
    if max_length is None or n <= max_length:
        return ids, labels, 0
    if truncation == "drop":
        return None
    keep = max_length
    if truncation == "turns":
        starts = [o[0] for o in offsets]
        fits = [k for k in (bisect_left(starts, end) for end in ends) if k <= max_length]
        if fits:
            keep = fits[-1]
    return ids[:keep], labels[:keep], n - keep


def tokenize_batch(
    dialogues: Sequence[Sequence[Mapping[str, Any]]],
    tokenizer,
    template="starchat",
    max_length: int | None = None,
    truncation: str = "turns",
) -> list[dict | None]:
    """Tokenize many dialogues at once; a dropped dialogue gives None."""
    if truncation not in TRUNCATION:
        raise StarchatError(f"truncation {truncation!r} is not one of {TRUNCATION}")
    if not getattr(tokenizer, "is_fast", False):
        raise StarchatError("a fast (Rust) tokenizer is needed for character offsets; load it with use_fast=True")
    tmpl = get_template(template)
    if any(tok not in tokenizer.get_vocab() for tok in tmpl.special_tokens):
        raise StarchatError(f"the tokenizer lacks the {tmpl.name} special tokens; call prepare_tokenizer first")
    rendered = [_spans(render_segments(d, tmpl)) for d in dialogues]
    # The backend's batch encoder runs on every core; its Encoding objects carry ids and offsets.
    backend = tokenizer.backend_tokenizer
    if backend.truncation or backend.padding:
        # a tokenizer.json may carry its own truncation/padding; our policy above must be the only one
        # (transformers resets these on every call too)
        backend.no_truncation()
        backend.no_padding()
    # Control-token text in the template is matched as control tokens: transformers leaves this flag as the
    # last `split_special_tokens=True` call set it (fim.encode_plain's, when FIM rows were made first), and
    # the dialogues would then lose every <|end|> to its spelling.
    backend.encode_special_tokens = False
    encodings = backend.encode_batch([r[0] for r in rendered], add_special_tokens=False)
    pattern = _control_pattern(tokenizer)
    out: list[dict | None] = []
    for d, (text, spans, ends), enc in zip(dialogues, rendered, encodings):
        ids, offsets = enc.ids, enc.offsets
        # render_segments has checked every content is a string
        literal = pattern is not None and any(pattern.search(m["content"]) for m in d)
        if literal:
            ids, offsets = _encode_pieces(backend, text, _literal_runs(d, tmpl, pattern, text))
        labels = _labels(ids, offsets, spans)
        cut = _truncate(ids, labels, offsets, ends, max_length, truncation)
        if cut is None:
            out.append(None)
            continue
        ids_k, labels_k, truncated = cut
        out.append(
            {
                "input_ids": ids_k,
                "labels": labels_k,
                "truncated": truncated,
                "length": len(ids_k),
                "control_text": bool(literal),
            }
        )
    return out


def tokenize_messages(
    messages: Sequence[Mapping[str, Any]],
    tokenizer,
    template="starchat",
    max_length: int | None = None,
    truncation: str = "turns",
) -> dict | None:
    """One dialogue: ``{"input_ids", "labels", "truncated", "length", "control_text"}``, or None if dropped."""
    return tokenize_batch([messages], tokenizer, template, max_length, truncation)[0]


def tokenize_dataset(
    ds,
    tokenizer,
    max_length: int | None = None,
    template="starchat",
    truncation: str = "turns",
    batch_size: int = 1000,
    column: str = "messages",
):
    """A ``datasets.Dataset`` with a ``messages`` column -> ``(Dataset[input_ids, labels, length], stats)``.

    Rows that end with no trained token are dropped and counted. Parallelism comes from the
    tokenizer's Rust batch encoder, which uses every core without forking Python processes.
    """
    import datasets

    if column not in ds.column_names:
        raise StarchatError(
            f"the dataset has no {column!r} column (columns: {ds.column_names}); build it with `starchat data build`"
        )
    stats = {
        "dialogues": len(ds),
        "kept": 0,
        "tokens": 0,
        "trained_tokens": 0,
        "truncated_tokens": 0,
        "truncated_dialogues": 0,
        "control_text_dialogues": 0,
        "dropped": {"too_long": 0, "no_assistant_tokens": 0},
    }
    cols: dict[str, list] = {"input_ids": [], "labels": [], "length": []}
    for start in range(0, len(ds), batch_size):
        batch = ds[start : start + batch_size][column]
        for row in tokenize_batch(batch, tokenizer, template, max_length, truncation):
            if row is None:
                stats["dropped"]["too_long"] += 1
                continue
            n_trained = len(row["labels"]) - row["labels"].count(IGNORE_INDEX)
            if n_trained == 0:
                stats["dropped"]["no_assistant_tokens"] += 1
                stats["truncated_tokens"] += row["truncated"]
                continue
            for k in cols:
                cols[k].append(row[k])
            stats["kept"] += 1
            stats["tokens"] += row["length"]
            stats["trained_tokens"] += n_trained
            stats["truncated_tokens"] += row["truncated"]
            stats["truncated_dialogues"] += bool(row["truncated"])
            stats["control_text_dialogues"] += row["control_text"]
    import pyarrow as pa

    lists = pa.list_(pa.int32())
    table = pa.table(
        {
            "input_ids": pa.array(cols["input_ids"], lists),
            "labels": pa.array(cols["labels"], lists),
            "length": pa.array(cols["length"], pa.int32()),
        }
    )
    return datasets.Dataset(table), stats
