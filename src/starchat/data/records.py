"""The shapes every data reader shares: a raw record, a read dialogue, read options, and the one error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starchat.errors import StarchatError


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


def get_field(rec: dict, key: str, where: str, types=(str,)) -> Any:
    """``rec[key]``, or a DataError naming ``where`` and the field when it is missing or not of ``types``."""
    if not isinstance(rec, dict) or key not in rec:
        raise DataError(f"{where}: missing field '{key}'")
    val = rec[key]
    if not isinstance(val, types):
        names = "/".join(t.__name__ for t in types)
        raise DataError(f"{where}: field '{key}' must be {names}, got {type(val).__name__}")
    return val


def check_text(messages: list[dict[str, str]], where: str) -> None:
    """Refuse text that cannot be written as UTF-8: JSON's ``\\ud800`` escapes decode to lone surrogates."""
    for i, m in enumerate(messages):
        for key, value in m.items():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise DataError(
                        f"{where}: not valid UTF-8 (field 'messages[{i}].{key}' holds a lone "
                        f"surrogate {value[e.start]!r} at character {e.start})"
                    ) from None
