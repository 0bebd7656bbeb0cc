"""Reading a source (local files or folders, or hub dataset names loaded through ``datasets``) into dialogues.

The formats themselves, dialogue and preference, are listed in `starchat.data.formats`. Every error names
the file, the line or record and the field.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starchat.data import formats
from starchat.data.records import DataError, Example, ReadOptions, Record, check_text  # noqa: F401  (re-exported)

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


# ---------------------------------------------------------------- raw records


def iter_records(path: Path) -> Iterator[Record]:
    """Records of one local file, each with its line (JSONL) or index (JSON array, parquet)."""
    if path.suffix == ".jsonl":
        with path.open("rb") as f:  # bytes: a line that is not UTF-8 is one bad record, not a traceback
            for lineno, raw in enumerate(f, 1):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Record(DataError(f"{where}: not valid UTF-8 (byte {e.start + 1} of the line)"), where)
                    continue
                if not line.strip():
                    continue
                try:
                    yield Record(json.loads(line), where)
                except json.JSONDecodeError as e:
                    yield Record(DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})"), where)
    elif path.suffix == ".json":
        raw = path.read_bytes()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise DataError(
                f"{path}:{line}: not valid UTF-8; a .json input is "
                "one record list, so fix the file (or convert it to .jsonl to skip bad lines)"
            ) from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix the file") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(f"{path}: a .json input must hold a list of records (or {{'data': [...]}})")
        for i, rec in enumerate(data):
            yield Record(rec, f"{path}#{i}")
    elif path.suffix == ".parquet":
        import datasets

        for i, rec in enumerate(datasets.Dataset.from_parquet(str(path))):
            yield Record(rec, f"{path}#{i}")
    else:
        raise DataError(f"{path}: unsupported file type; use one of {FILE_SUFFIXES}")


def iter_hub_records(name: str) -> Iterator[Record]:
    """Records of a hub dataset: ``org/name`` or ``org/name#split`` (default split: train)."""
    import datasets

    repo, _, split = name.partition("#")
    try:
        ds = datasets.load_dataset(repo, split=split or "train")
    except Exception as e:  # the hub's errors are many; ours must say what to do
        raise DataError(
            f"{name}: not a local path, and loading it from the Hugging Face hub failed "
            f"({type(e).__name__}: {e}); check the path or the dataset name"
        ) from None
    for i, rec in enumerate(ds):
        yield Record(rec, f"{name}#{i}")


def source_files(source: str) -> list[Path] | None:
    """The files of a local source (a file, or every supported file in a folder); None if not local."""
    p = Path(source)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in FILE_SUFFIXES)
        if not files:
            raise DataError(f"{p}: folder holds no {', '.join(FILE_SUFFIXES)} files")
        return files
    if re.fullmatch(r"[\w.-]+/[\w.-]+(#[\w.-]+)?", source):
        return None
    raise DataError(f"{source}: no such file or folder (and not a hub dataset name like org/name)")


# ---------------------------------------------------------------- format detection


# ---------------------------------------------------------------- per-record converters


# ---------------------------------------------------------------- reading a source


@dataclass
class ReadStats:
    """Per-source counts kept while reading."""

    records: Counter = field(default_factory=Counter)  # by file (or hub name)
    invalid: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def detect_format(rec: Any, where: str) -> str:
    """The dialogue format of a record from its keys (`starchat.data.formats.detect`)."""
    return formats.detect(rec, where, "dialogue")


def read_source(
    source: str,
    fmt: str = "auto",
    opts: ReadOptions | None = None,
    stats: ReadStats | None = None,
    kind: str = "dialogue",
) -> Iterator[Example]:
    """All dialogues (``kind="preference"``: pairs, see starchat.data.preference) of one source
    (file, folder or hub name), converted to messages."""
    opts = opts or ReadOptions()
    stats = stats if stats is not None else ReadStats()
    if fmt != formats.AUTO:
        formats.get(kind, fmt)  # an unknown --format fails before any file is read
    files = source_files(source)
    streams = [(str(f), iter_records(f)) for f in files] if files is not None else [(source, iter_hub_records(source))]
    for name, records in streams:
        yield from _read_stream(name, records, fmt, opts, stats, kind)


def _read_stream(
    name: str, records: Iterable[Record], fmt: str, opts: ReadOptions, stats: ReadStats, kind: str = "dialogue"
) -> Iterator[Example]:
    """A converter returns messages, or (messages, meta) for preference pairs; a format that reads trees
    (oasst) gets all of the file's rows at the end."""
    file_fmt = None if fmt == formats.AUTO else formats.get(kind, fmt)
    tree_rows: list[Record] = []
    for rec in records:
        stats.records[name] += 1
        try:
            if isinstance(rec.data, DataError):
                raise rec.data
            file_fmt = file_fmt or formats.get(kind, formats.detect(rec.data, rec.where, kind))
            if file_fmt.read_trees is not None:
                tree_rows.append(rec)  # trees need every row of the file first
                continue
            out = file_fmt.convert(rec.data, rec.where)
            msgs, meta = out if isinstance(out, tuple) else (out, {})
            check_text(msgs, rec.where)
        except DataError as e:
            _invalid(e, name, stats, opts)
            continue
        yield Example(msgs, source=name, where=rec.where, group=rec.where, meta=meta)
    if tree_rows:
        for ex in file_fmt.read_trees(name, tree_rows, opts, lambda e: _invalid(e, name, stats, opts)):
            try:
                check_text(ex.messages, ex.where)
            except DataError as e:
                _invalid(e, name, stats, opts)
                continue
            yield ex


def _invalid(err: DataError, name: str, stats: ReadStats, opts: ReadOptions) -> None:
    if not opts.skip_invalid:
        raise DataError(f"{err} (pass --skip-invalid to skip such records)") from None
    stats.invalid[name] += 1
    if len(stats.errors) < 20:  # a sample for stats.json; the count is exact
        stats.errors.append(str(err))
