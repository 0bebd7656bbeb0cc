"""Readers that turn conversation datasets in every common format into OpenAI-style messages.

Formats: oasst (flat oasst1 rows or the message-tree JSONL export), guanaco (``### Human:`` text),
sharegpt (``conversations`` with ``from``/``value``), messages (OpenAI JSONL), alpaca
(instruction/input/output, and prompt/completion). Sources are local files or folders, or hub
dataset names loaded through ``datasets``. Every error names the file, the line or record and
the field.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from starchat.errors import StarchatError
from starchat.templates import TemplateError, validate_messages

FORMATS = ("auto", "oasst", "guanaco", "sharegpt", "messages", "alpaca")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(StarchatError):
    """A record that cannot be read; the message says where and which field."""


@dataclass
class Record:
    """One raw record with where it came from (``file:line`` or ``file#index``)."""

    data: Any
    where: str


@dataclass
class Example:
    """One dialogue read from a source. ``group`` keeps related dialogues (one oasst tree) together."""

    messages: list[dict[str, str]]
    source: str
    where: str
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadOptions:
    """What the readers keep: ``lang`` filters oasst messages, ``best_path_only`` keeps one path per tree."""

    lang: str | None = None
    best_path_only: bool = False
    skip_invalid: bool = False


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
            raise DataError(f"{path}:{line}: not valid UTF-8; a .json input is "
                            "one record list, so fix the file (or convert it to .jsonl to skip bad lines)") from None
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
        raise DataError(f"{name}: not a local path, and loading it from the Hugging Face hub failed "
                        f"({type(e).__name__}: {e}); check the path or the dataset name") from None
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


def detect_format(rec: Any, where: str) -> str:
    """The format of a record from its keys."""
    if isinstance(rec, dict):
        keys = set(rec)
        if "conversations" in keys:
            return "sharegpt"
        if "messages" in keys:
            return "messages"
        if {"message_id", "parent_id"} <= keys or ("message_tree_id" in keys and "prompt" in keys):
            return "oasst"
        if "text" in keys and isinstance(rec["text"], str) and "### Human:" in rec["text"]:
            return "guanaco"
        if "instruction" in keys or {"prompt", "completion"} <= keys:
            return "alpaca"
    raise DataError(f"{where}: cannot tell the format from the fields {sorted(rec) if isinstance(rec, dict) else type(rec).__name__}; "
                    f"pass --format ({'|'.join(FORMATS[1:])})")


# ---------------------------------------------------------------- per-record converters


def _field(rec: dict, key: str, where: str, types=(str,)) -> Any:
    if not isinstance(rec, dict) or key not in rec:
        raise DataError(f"{where}: missing field '{key}'")
    val = rec[key]
    if not isinstance(val, types):
        names = "/".join(t.__name__ for t in types)
        raise DataError(f"{where}: field '{key}' must be {names}, got {type(val).__name__}")
    return val


_GUANACO_SPLIT = re.compile(r"###\s*(Human|Assistant):")


def from_guanaco(rec: dict, where: str) -> list[dict[str, str]]:
    text = _field(rec, "text", where)
    parts = _GUANACO_SPLIT.split(text)
    if parts[0].strip():
        raise DataError(f"{where}: field 'text' must start with '### Human:', found {parts[0][:40]!r}")
    if len(parts) < 3:
        raise DataError(f"{where}: field 'text' has no '### Human:' / '### Assistant:' turns")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}


def from_sharegpt(rec: dict, where: str) -> list[dict[str, str]]:
    conv = _field(rec, "conversations", where, (list,))
    out = []
    for i, turn in enumerate(conv):
        who = _field(turn, "from", f"{where}: conversations[{i}]")
        if who not in _SHAREGPT_ROLES:
            raise DataError(f"{where}: field 'conversations[{i}].from' is {who!r}; expected one of "
                            f"{sorted(_SHAREGPT_ROLES)}")
        out.append({"role": _SHAREGPT_ROLES[who], "content": _field(turn, "value", f"{where}: conversations[{i}]")})
    return out


def from_messages(rec: dict, where: str) -> list[dict[str, str]]:
    msgs = _field(rec, "messages", where, (list,))
    try:
        return validate_messages(msgs, where="messages")
    except TemplateError as e:
        raise DataError(f"{where}: field {e}") from None


def from_alpaca(rec: dict, where: str) -> list[dict[str, str]]:
    if isinstance(rec, dict) and "instruction" in rec:
        user = _field(rec, "instruction", where)
        extra = rec.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be str, got {type(extra).__name__}")
        if extra.strip():
            user = f"{user}\n\n{extra}"
        reply = _field(rec, "output", where)
    else:
        user, reply = _field(rec, "prompt", where), _field(rec, "completion", where)
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    system = rec.get("system") if isinstance(rec, dict) else None
    return ([{"role": "system", "content": system}] if isinstance(system, str) and system else []) + msgs


CONVERTERS: dict[str, Callable[[dict, str], list[dict[str, str]]]] = {
    "guanaco": from_guanaco, "sharegpt": from_sharegpt, "messages": from_messages, "alpaca": from_alpaca,
}


# ---------------------------------------------------------------- reading a source


@dataclass
class ReadStats:
    """Per-source counts kept while reading."""

    records: Counter = field(default_factory=Counter)  # by file (or hub name)
    invalid: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def read_source(source: str, fmt: str = "auto", opts: ReadOptions | None = None,
                stats: ReadStats | None = None, kind: str = "dialogue") -> Iterator[Example]:
    """All dialogues (``kind="preference"``: pairs, see starchat.data.preference) of one source
    (file, folder or hub name), converted to messages."""
    opts = opts or ReadOptions()
    stats = stats if stats is not None else ReadStats()
    if kind == "preference":
        from starchat.data import preference as pref

        formats, detect, converters, trees = pref.FORMATS, pref.detect_format, pref.CONVERTERS, pref.read_oasst_pairs
    else:
        from starchat.data.oasst import read_oasst

        formats, detect, converters, trees = FORMATS, detect_format, CONVERTERS, read_oasst
    if fmt not in formats:
        raise DataError(f"--format {fmt!r} is not one of {formats} (for --kind {kind})")
    files = source_files(source)
    streams = [(str(f), iter_records(f)) for f in files] if files is not None else [(source, iter_hub_records(source))]
    for name, records in streams:
        yield from _read_stream(name, records, fmt, opts, stats, detect, converters, trees)


def _read_stream(name: str, records: Iterable[Record], fmt: str, opts: ReadOptions, stats: ReadStats,
                 detect: Callable = detect_format, converters: dict = CONVERTERS,
                 trees: Callable | None = None) -> Iterator[Example]:
    """A converter returns messages, or (messages, meta) for preference pairs; oasst rows go to ``trees``."""
    file_fmt = None if fmt == "auto" else fmt
    oasst_rows: list[Record] = []
    for rec in records:
        stats.records[name] += 1
        try:
            if isinstance(rec.data, DataError):
                raise rec.data
            file_fmt = file_fmt or detect(rec.data, rec.where)
            if file_fmt == "oasst":
                oasst_rows.append(rec)  # trees need every row of the file first
                continue
            out = converters[file_fmt](rec.data, rec.where)
            msgs, meta = out if isinstance(out, tuple) else (out, {})
            check_text(msgs, rec.where)
        except DataError as e:
            _invalid(e, name, stats, opts)
            continue
        yield Example(msgs, source=name, where=rec.where, group=rec.where, meta=meta)
    if oasst_rows and trees is not None:
        for ex in trees(name, oasst_rows, opts, lambda e: _invalid(e, name, stats, opts)):
            try:
                check_text(ex.messages, ex.where)
            except DataError as e:
                _invalid(e, name, stats, opts)
                continue
            yield ex


def check_text(messages: list[dict[str, str]], where: str) -> None:
    """Refuse text that cannot be written as UTF-8: JSON's ``\\ud800`` escapes decode to lone surrogates."""
    for i, m in enumerate(messages):
        for key, value in m.items():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise DataError(f"{where}: not valid UTF-8 (field 'messages[{i}].{key}' holds a lone "
                                    f"surrogate {value[e.start]!r} at character {e.start})") from None


def _invalid(err: DataError, name: str, stats: ReadStats, opts: ReadOptions) -> None:
    if not opts.skip_invalid:
        raise DataError(f"{err} (pass --skip-invalid to skip such records)") from None
    stats.invalid[name] += 1
    if len(stats.errors) < 20:  # a sample for stats.json; the count is exact
        stats.errors.append(str(err))
