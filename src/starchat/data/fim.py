"""The FIM transform: code documents split at random characters into prefix / middle / suffix training rows.

As StarCoder was pretrained (and as "Efficient Training of Language Models to Fill in the Middle", Bavarian et
al. 2022, describe): for each document, two character positions drawn uniformly cut it into prefix, middle and
suffix; the row is ``<pre> P <suf> S <mid> M <eot>`` (PSM) or StarCoder's SPM variant ``<pre> <suf> S <mid> P M
<eot>`` (``starchat.fim.training_ids``). A document that is not turned into a FIM row (share ``1 - rate``) is a
plain code row, ``text <eot>`` trained left to right, as StarCoder's other documents were: the model keeps
completing code from a prefix alone, which is also what an editor asks with an empty suffix.

Documents come from a code base (``stdlib``, an installed package, a folder or a ``.py`` file; as whole files
or their top-level functions and classes, the units ``data from-code`` reads) or from a text column of a
dataset. Anything sharing a 13-token span or an entry-point name with HumanEval is dropped (as ``data
from-code`` does), so ``eval infill`` measures what the model learned, not what it saw.

Every random choice comes from a generator seeded by ``seed`` and the document's text: the same seed gives the
same rows, and a document keeps its split when the source grows.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import random
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from starchat import fim
from starchat.data.tokenize import IGNORE_INDEX
from starchat.errors import StarchatError

UNITS = ("function", "file")
SPANS = ("char", "line", "mixed")
MAX_SCANNED_FILES = 20000  # a source tree bigger than this is cut (a typo pointing at / must not take hours)
PER_FILE = 4  # documents taken from one file: a sample spread over the code base, not one big module's pieces


@dataclass
class FimDocument:
    text: str
    origin: str  # file path (and unit name) or dataset row, for messages


@dataclass
class FimStats:
    """What the transform made; kept in the data stats and the model card."""

    source: str = ""
    documents: int = 0
    psm: int = 0
    spm: int = 0
    code: int = 0
    too_long: int = 0
    humaneval_overlap: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    files: int = 0
    unparsable_files: int = 0

    @property
    def rows(self) -> int:
        return self.psm + self.spm + self.code


def split_document(text: str, rng: random.Random) -> tuple[str, str, str]:
    """Prefix, middle, suffix: two character positions drawn uniformly in [0, len(text)] (Bavarian et al.)."""
    a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    return text[:a], text[a:b], text[b:]


def split_lines(text: str, rng: random.Random) -> tuple[str, str, str]:
    """Prefix, middle, suffix where the middle is whole lines, its first one not blank: one line half of the
    time, else a block of 2 to half the document's lines. These are the middles an editor asks for when the
    cursor starts an empty line (a line or block completion) and the ones ``eval infill`` masks in its
    single- and multi-line modes. A document of one line falls back to a character-level split."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip()]
    if len(lines) < 2 or not starts:
        return split_document(text, rng)
    k = 1 if rng.random() < 0.5 else rng.randint(2, max(2, len(lines) // 2))
    i = rng.choice(starts)
    k = min(k, len(lines) - i)
    return "".join(lines[:i]), "".join(lines[i : i + k]), "".join(lines[i + k :])


def document_rng(seed: int, text: str) -> random.Random:
    """The document's own generator: its choices do not depend on which other documents are there."""
    digest = hashlib.sha256(f"{seed}:{text}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return random.Random(int(digest, 16))


def plan_row(
    text: str, seed: int, rate: float, spm_rate: float, span: str = "char"
) -> tuple[str, tuple[str, str, str] | None]:
    """('psm'|'spm', (prefix, middle, suffix)) for a FIM row, or ('code', None) for a plain one. ``span``:
    'char' splits at two random characters (``split_document``), 'line' takes whole lines (``split_lines``),
    'mixed' picks one of the two with even odds."""
    if span not in SPANS:
        raise StarchatError(f"data.fim.span must be one of {SPANS}, got {span!r}")
    rng = document_rng(seed, text)
    if rng.random() >= rate:
        return "code", None
    order = "spm" if rng.random() < spm_rate else "psm"
    by_line = span == "line" or (span == "mixed" and rng.random() < 0.5)
    return order, (split_lines if by_line else split_document)(text, rng)


# -- documents --------------------------------------------------------------------------------------------
def _units(path: Path, text: str, unit: str, stats: FimStats) -> Iterator[FimDocument]:
    if unit == "file":
        yield FimDocument(text, str(path))
        return
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        stats.unparsable_files += 1
        return
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if node.end_lineno - start < 2:  # one-liners: nothing to fill in
                continue
            lines = text.splitlines(keepends=True)[start - 1 : node.end_lineno]
            yield FimDocument(textwrap.dedent("".join(lines)), f"{path}:{node.name}")


def _cut(doc: FimDocument, max_chars: int) -> Iterator[FimDocument]:
    """Pieces of at most max_chars characters, cut at line ends (a longer single line is dropped)."""
    if len(doc.text) <= max_chars:
        yield doc
        return
    piece: list[str] = []
    size = 0
    for line in doc.text.splitlines(keepends=True):
        if len(line) > max_chars:
            continue
        if size + len(line) > max_chars and piece:
            yield FimDocument("".join(piece), doc.origin)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece and "".join(piece).strip():
        yield FimDocument("".join(piece), doc.origin)


def code_documents(source: str, unit: str, seed: int, max_chars: int, stats: FimStats) -> Iterator[FimDocument]:
    """Documents of a code base, files visited in a seeded random order, at most PER_FILE from each (a sample
    across the whole tree)."""
    from starchat.data.from_code import iter_py_files, resolve_source

    try:
        label, root = resolve_source(source)
    except StarchatError as e:
        raise StarchatError(
            f"data.fim.source: {source!r} is not 'stdlib', an installed package, a folder or a .py "
            "file; for a dataset also set data.fim.text_column"
        ) from e
    files = []
    for i, p in enumerate(iter_py_files(label, root)):
        if i >= MAX_SCANNED_FILES:
            break
        files.append(p)
    random.Random(seed).shuffle(files)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            stats.unparsable_files += 1
            continue
        stats.files += 1
        docs = (piece for doc in _units(path, text, unit, stats) for piece in _cut(doc, max_chars))
        for _, doc in zip(range(PER_FILE), docs):
            yield doc


def dataset_documents(source: str, column: str, max_chars: int, load: Callable) -> Iterator[FimDocument]:
    """Documents from a text column of a dataset; ``load(source)`` gives its DatasetDict (training passes its
    loader of `save_to_disk` folders, .json/.jsonl files and hub IDs)."""
    ds = load(source)
    split = "train" if "train" in ds else sorted(ds)[0]
    d = ds[split]
    if column not in d.column_names:
        raise StarchatError(f"data.fim.text_column: {source} has no column {column!r} (columns: {d.column_names})")
    i = 0
    for batch in d.select_columns([column]).iter(batch_size=256):  # lazily: only as many rows as are used
        for text in batch[column]:
            if isinstance(text, str) and text.strip():
                yield from _cut(FimDocument(text, f"{source}[{split}][{i}]"), max_chars)
            i += 1


class _Decontaminator:
    """Drops documents sharing a 13-token span or a HumanEval entry point's name (`data from-code`'s rule)."""

    def __init__(self) -> None:
        import re

        from starchat.data.from_code import humaneval_index

        names, self.grams = humaneval_index()
        self.names = re.compile(r"\b(?:def|class)\s+(" + "|".join(sorted(map(re.escape, names))) + r")\b")

    def overlaps(self, text: str) -> bool:
        from starchat.data.from_code import _ngrams

        return bool(self.names.search(text)) or not self.grams.isdisjoint(_ngrams(text))


def collect_documents(
    source: str,
    *,
    text_column: str | None = None,
    unit: str = "function",
    seed: int = 0,
    max_chars: int = 2000,
    limit: int | None = None,
    stats: FimStats | None = None,
    load: Callable | None = None,
) -> list[FimDocument]:
    """Up to ``limit`` distinct, decontaminated documents of ``source`` (``load``: see dataset_documents)."""
    stats = stats if stats is not None else FimStats()
    stats.source = source
    if unit not in UNITS:
        raise StarchatError(f"data.fim.unit must be one of {UNITS}, got {unit!r}")
    docs = (
        dataset_documents(source, text_column, max_chars, load)
        if text_column
        else code_documents(source, unit, seed, max_chars, stats)
    )
    clean = _Decontaminator()
    out, seen = [], set()
    for doc in docs:
        if limit is not None and len(out) >= limit:
            break
        key = hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).digest()
        if key in seen or not doc.text.strip():
            continue
        seen.add(key)
        if clean.overlaps(doc.text):
            stats.humaneval_overlap += 1
            continue
        out.append(doc)
    stats.documents = len(out)
    return out


# -- rows -------------------------------------------------------------------------------------------------
def fim_rows(
    docs: Sequence[FimDocument],
    spec: fim.FimSpec,
    ids: dict[str, int],
    encode: Callable[[str], list[int]],
    *,
    rate: float = 0.5,
    spm_rate: float = 0.5,
    span: str = "char",
    seed: int = 0,
    max_length: int | None = None,
    max_rows: int | None = None,
    stats: FimStats | None = None,
    bos: Sequence[int] = (),
) -> list[dict]:
    """Tokenized rows ``{input_ids, labels, length, kind}`` (kind psm, spm or code), at most ``max_rows``.

    FIM rows train the middle and its end token only (``fim.training_ids``' mask, built with the ids): an
    editor sends prefix and suffix and asks for the middle, so those are context, never targets. They start
    with ``bos`` and the repository header, as a served request's prompt does. Plain code rows train every
    token and the end. Rows longer than ``max_length`` are dropped and counted.
    """
    stats = stats if stats is not None else FimStats()
    eot = ids[spec.eot]
    out: list[dict] = []
    for doc in docs:
        if max_rows is not None and len(out) >= max_rows:
            break
        kind, parts = plan_row(doc.text, seed, rate, spm_rate, span)
        if parts is None:
            row = [*bos, *encode(doc.text), eot]
            trained = [False] * len(bos) + [True] * (len(row) - len(bos))
        else:
            prefix, middle, suffix = parts
            row, trained = fim.training_ids(
                spec, ids, encode, prefix=prefix, middle=middle, suffix=suffix, order=kind, bos=bos
            )
        if max_length is not None and len(row) > max_length:
            stats.too_long += 1
            continue
        labels = [t if keep else IGNORE_INDEX for t, keep in zip(row, trained)]
        out.append({"input_ids": row, "labels": labels, "length": len(row), "kind": kind})
        setattr(stats, kind, getattr(stats, kind) + 1)
        stats.tokens += len(row)
        stats.trained_tokens += sum(trained)
    return out


def rows_for_tokenizer(tokenizer, spec: fim.FimSpec):
    """(token ids of the spec, plain-text encoder, BOS ids) for a Hugging Face tokenizer; the BOS is what the
    tokenizer puts before any text (none for StarCoder or SmolLM2), as a served prompt starts with it."""
    vocab = tokenizer.get_vocab()
    bos = tokenizer("", add_special_tokens=True)["input_ids"]
    return fim.token_ids(spec, vocab.get), functools.partial(fim.encode_plain, tokenizer), bos
