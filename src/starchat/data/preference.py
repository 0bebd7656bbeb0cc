"""Readers for preference data: a prompt (messages ending with a user turn) and a chosen and a rejected reply.

Formats (``--kind preference --format ...``, listed in `starchat.data.formats`):
- ``trl``: TRL's conversational preference format, ``prompt``/``chosen``/``rejected`` as message lists;
  or its implicit-prompt form, ``chosen``/``rejected`` as whole dialogues sharing a prefix (as in
  UltraFeedback-binarized, whose string ``prompt`` is then ignored);
- ``text``: ``prompt``/``chosen``/``rejected`` strings (one user turn, one reply each);
- ``hh``: Anthropic HH, ``chosen``/``rejected`` as ``\\n\\nHuman: ... \\n\\nAssistant: ...`` text;
- ``oasst``: oasst1 trees (flat rows or the tree export): each prompter message with at least two
  ranked assistant replies gives one pair, the best rank chosen and the worst rejected.

Each record becomes an ``Example`` whose ``messages`` are the prompt (so dedup, decontamination and
the split work on the prompt) with ``meta["chosen"]``/``meta["rejected"]`` one-message lists. A
pair with identical replies, an empty reply, or a prompt that does not end with a user turn is an
error naming the record.

Written out (`data build --kind preference`, `data pairs`), a pair is one row of TRL's conversational
preference format: ``prompt`` (messages ending with a user turn), ``chosen`` and ``rejected`` (one
assistant message each); `method: dpo` reads these columns and ignores any others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from starchat.data.oasst import ROLE, load_tree, roots
from starchat.data.records import DataError, Example, ReadOptions, Record
from starchat.data.records import get_field as _field
from starchat.templates import TemplateError, validate_messages

Pair = tuple[list[dict[str, str]], dict[str, Any]]


def is_trl(rec: dict) -> bool:
    return isinstance(rec.get("chosen"), list)


def is_hh(rec: dict) -> bool:
    chosen = rec.get("chosen")
    return isinstance(chosen, str) and bool(re.search(r"(^|\n)\s*Human:", chosen)) and "Assistant:" in chosen


def is_text(rec: dict) -> bool:
    return isinstance(rec.get("chosen"), str) and "prompt" in rec


def _messages(value: Any, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise DataError(
            f"{where}: field '{key}' must be a list of {{role, content}} messages, got {type(value).__name__}"
        )
    try:
        return validate_messages(value, where=key)
    except TemplateError as e:
        raise DataError(f"{where}: field {e}") from None


def same_reply(a: str, b: str) -> bool:
    """Two replies count as one when they differ only in surrounding whitespace (a pair of them would teach
    the model nothing but whitespace)."""
    return a.strip() == b.strip()


def check_pair(
    prompt: list[dict[str, str]], chosen: list[dict[str, str]], rejected: list[dict[str, str]], where: str
) -> Pair:
    """The one rule for a valid preference pair (`data build --kind preference`, `data pairs` and DPO
    training all apply it): the prompt ends with a user turn and has no empty turn but a system one; chosen
    and rejected are one non-empty assistant reply each, different after stripping whitespace. Returns
    (prompt, meta); the first broken rule is a DataError naming ``where`` and the field."""
    if not prompt or prompt[-1]["role"] != "user":
        last = prompt[-1]["role"] if prompt else "nothing"
        raise DataError(f"{where}: field 'prompt' must end with a user turn, it ends with {last}")
    for key, reply in (("chosen", chosen), ("rejected", rejected)):
        if len(reply) != 1 or reply[0]["role"] != "assistant":
            raise DataError(
                f"{where}: field '{key}' must be exactly one assistant reply after the prompt, "
                f"got roles {[m['role'] for m in reply]}"
            )
        if not reply[0]["content"].strip():
            raise DataError(f"{where}: field '{key}' is an empty reply")
    if same_reply(chosen[0]["content"], rejected[0]["content"]):
        raise DataError(f"{where}: fields 'chosen' and 'rejected' are the same reply; a pair needs two different ones")
    for m in prompt:
        if not m["content"].strip() and m["role"] != "system":
            raise DataError(f"{where}: field 'prompt' has an empty {m['role']} turn")
    return prompt, {"chosen": chosen, "rejected": rejected}


def _split_shared(chosen: list[dict], rejected: list[dict], where: str) -> Pair:
    """Implicit prompt: the longest shared prefix of two dialogues, cut before the reply they differ in."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":  # identical dialogues: the last reply is the pair
        n -= 1
    return check_pair(chosen[:n], chosen[n:], rejected[n:], where)


def from_trl(rec: dict, where: str) -> Pair:
    chosen = _messages(_field(rec, "chosen", where, (list,)), where, "chosen")
    rejected = _messages(_field(rec, "rejected", where, (list,)), where, "rejected")
    prompt = rec.get("prompt")
    if isinstance(prompt, list):
        return check_pair(_messages(prompt, where, "prompt"), chosen, rejected, where)
    if prompt is not None and not isinstance(prompt, str):
        raise DataError(f"{where}: field 'prompt' must be a message list (or absent), got {type(prompt).__name__}")
    if isinstance(prompt, str) and len(chosen) == 1 and len(rejected) == 1:  # string prompt + one reply each
        return check_pair([{"role": "user", "content": prompt}], chosen, rejected, where)
    return _split_shared(chosen, rejected, where)


def from_text(rec: dict, where: str) -> Pair:
    prompt, chosen, rejected = (_field(rec, k, where) for k in ("prompt", "chosen", "rejected"))
    system = rec.get("system")
    msgs = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    return check_pair(
        msgs + [{"role": "user", "content": prompt}],
        [{"role": "assistant", "content": chosen}],
        [{"role": "assistant", "content": rejected}],
        where,
    )


_HH_SPLIT = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def _hh_dialogue(text: str, where: str, key: str) -> list[dict[str, str]]:
    parts = _HH_SPLIT.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise DataError(f"{where}: field '{key}' must be '\\n\\nHuman: ...\\n\\nAssistant: ...' text")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def from_hh(rec: dict, where: str) -> Pair:
    chosen = _hh_dialogue(_field(rec, "chosen", where), where, "chosen")
    rejected = _hh_dialogue(_field(rec, "rejected", where), where, "rejected")
    return _split_shared(chosen, rejected, where)


def read_oasst_pairs(
    name: str, records: list[Record], opts: ReadOptions, on_invalid: Callable[[DataError], None]
) -> Iterator[Example]:
    """One pair per prompter message with two or more ranked replies: best rank chosen, worst rejected."""
    children, where = load_tree(records, opts, on_invalid)
    for root in roots(children, where, on_invalid):
        stack = [[root]]
        while stack:
            path = stack.pop()
            node = path[-1]
            kids = [c for c in children.get(node["message_id"], []) if c["role"] != node["role"]]
            stack.extend(path + [k] for k in reversed(kids))
            ranked = sorted((k for k in kids if isinstance(k.get("rank"), (int, float))), key=lambda k: k["rank"])
            if node["role"] != "prompter" or len(ranked) < 2 or ranked[0]["rank"] == ranked[-1]["rank"]:
                continue
            prompt = [{"role": ROLE[r["role"]], "content": r["text"]} for r in path]
            best, worst = ranked[0], ranked[-1]
            try:
                prompt, meta = check_pair(
                    prompt,
                    [{"role": "assistant", "content": best["text"]}],
                    [{"role": "assistant", "content": worst["text"]}],
                    where[best["message_id"]],
                )
            except DataError as e:
                on_invalid(e)
                continue
            yield Example(
                prompt,
                source=name,
                where=where[node["message_id"]],
                group=str(root.get("message_tree_id") or root["message_id"]),
                meta={**meta, "lang": root.get("lang")},
            )


def full_dialogue(ex: Example) -> list[dict[str, str]]:
    """Prompt plus chosen reply: what the dialogue filters (structure, refusals) look at."""
    return ex.messages + ex.meta["chosen"]
