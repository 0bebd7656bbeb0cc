"""Dialogue formats: guanaco, sharegpt, messages and alpaca records to OpenAI-style messages (oasst: data/oasst.py).

Each ``from_X(record, where)`` returns the messages or raises a DataError naming ``where`` and the field;
each ``is_X(record)`` tells the format from the record's keys, for ``--format auto``. They are listed in
`starchat.data.formats`.
"""

from __future__ import annotations

import re

from starchat.data.records import DataError
from starchat.data.records import get_field as _field
from starchat.templates import TemplateError, validate_messages


def is_sharegpt(rec: dict) -> bool:
    return "conversations" in rec


def is_messages(rec: dict) -> bool:
    return "messages" in rec


def is_guanaco(rec: dict) -> bool:
    return isinstance(rec.get("text"), str) and "### Human:" in rec["text"]


def is_alpaca(rec: dict) -> bool:
    return "instruction" in rec or {"prompt", "completion"} <= set(rec)


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


_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "system": "system",
}


def from_sharegpt(rec: dict, where: str) -> list[dict[str, str]]:
    conv = _field(rec, "conversations", where, (list,))
    out = []
    for i, turn in enumerate(conv):
        who = _field(turn, "from", f"{where}: conversations[{i}]")
        if who not in _SHAREGPT_ROLES:
            raise DataError(
                f"{where}: field 'conversations[{i}].from' is {who!r}; expected one of {sorted(_SHAREGPT_ROLES)}"
            )
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
