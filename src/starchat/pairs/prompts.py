"""Prompt sets for `data pairs`: built-in stdlib sets, human-eval problem files, prompt JSONL, saved datasets.

A prompt row is the chat request (messages ending with a user turn) plus, where known, what the
scorer can test: the function's name (``entry_point``), a human-eval ``check(candidate)`` test and
the code prompt (signature and docstring) that the reply's code is run after. A row without a test
gets one from the doctest examples in its last user message, when they are usable.

Accepted rows: human-eval problems (``task_id``, ``prompt`` code, ``entry_point``, ``test``),
``{"messages": [...]}`` or ``{"prompt": [...messages]}`` (a trailing assistant reply is dropped),
or ``{"prompt": "text"}``; optional ``id``/``task_id``, ``entry_point``, ``test``, ``code_prompt``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starchat.data.doctests import doctest_check, guess_entry_point
from starchat.data.readers import DataError, Record, iter_records, source_files
from starchat.templates import TemplateError, validate_messages


@dataclass
class PromptRow:
    id: str
    prompt: list[dict[str, str]]  # messages, ending with a user turn, no system message added yet
    entry_point: str | None = None
    test: str = ""
    code_prompt: str = ""

    def messages(self, system: str | None = None) -> list[dict[str, str]]:
        has_system = self.prompt and self.prompt[0]["role"] == "system"
        return ([{"role": "system", "content": system}] if system and not has_system else []) + self.prompt

    def problem(self) -> dict[str, Any] | None:
        """The row as a human-eval problem for programs.chat_program / job_for; None without an entry point."""
        if not self.entry_point:
            return None
        return {"task_id": self.id, "prompt": self.code_prompt, "entry_point": self.entry_point, "test": self.test}


def _from_problem(p: dict[str, Any]) -> PromptRow:
    from starchat.eval.prompting import messages_for

    return PromptRow(p["task_id"], messages_for(p), p["entry_point"], p["test"], p["prompt"])


def row_from_record(rec: Any, where: str) -> PromptRow:
    """One prompt row; errors name the record and the field."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: a prompt row must be an object, got {type(rec).__name__}")
    rid = rec.get("task_id") or rec.get("id") or where
    if isinstance(rec.get("prompt"), str) and isinstance(rec.get("entry_point"), str) and "test" in rec:
        if not isinstance(rec["test"], str):
            raise DataError(f"{where}: field 'test' must be str, got {type(rec['test']).__name__}")
        return _from_problem({**rec, "task_id": str(rid)})
    raw = rec.get("messages", rec.get("prompt"))
    key = "messages" if "messages" in rec else "prompt"
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise DataError(
            f"{where}: a prompt row needs 'prompt' (text or messages), 'messages', or human-eval's "
            f"task_id/prompt/entry_point/test; got fields {sorted(rec)}"
        )
    try:
        msgs = validate_messages(raw, where=key)
    except TemplateError as e:
        raise DataError(f"{where}: field {e}") from None
    while msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]  # a dialogue: the request is everything before the reply
    if not msgs or msgs[-1]["role"] != "user" or not msgs[-1]["content"].strip():
        raise DataError(f"{where}: field '{key}' must end with a non-empty user turn")
    roles = [m["role"] for m in (msgs[1:] if msgs[0]["role"] == "system" else msgs)]
    if roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
        raise DataError(
            f"{where}: field '{key}': roles {[m['role'] for m in msgs]} must be an optional system "
            "message, then user and assistant turns alternating, ending with a user turn"
        )
    text = msgs[-1]["content"]
    for name in ("entry_point", "test", "code_prompt"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            raise DataError(f"{where}: field '{name}' must be str, got {type(rec[name]).__name__}")
    entry = rec.get("entry_point") or guess_entry_point(text)
    test = rec.get("test") or (doctest_check(text, entry) if entry else "")
    return PromptRow(str(rid), msgs, entry, test, rec.get("code_prompt") or "")


def _records(spec: str) -> Iterator[Record]:
    path, _, split = spec.partition("#")
    p = Path(path)
    if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            split = split or ("train" if "train" in ds else next(iter(ds)))
            if split not in ds:
                raise DataError(f"{spec}: no split {split!r} (it has {sorted(ds)})")
            ds = ds[split]
        for i, rec in enumerate(ds):
            yield Record(rec, f"{path}[{split or 0}]#{i}")
        return
    if p.is_file() and p.name.endswith(".jsonl.gz"):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield Record(json.loads(line), f"{p}:{n}")
        return
    files = source_files(spec)
    if files is None:
        from starchat.data.readers import iter_hub_records

        yield from iter_hub_records(spec)
        return
    for f in files:
        yield from iter_records(f)


def load_prompts(spec: str, limit: int | None = None) -> list[PromptRow]:
    """The prompt rows of ``spec`` (deduplicated by prompt); a bad row stops with its file:line."""
    from starchat.data import stdlib_prompts
    from starchat.data.filters import exact_key

    if spec == "stdlib-pairs":
        rows = [
            PromptRow(r["id"], r["prompt"], r["entry_point"], r["test"], r["code_prompt"])
            for r in stdlib_prompts.stdlib_pairs_rows()
        ]
    elif spec == "stdlib-eval":
        rows = [_from_problem(p) for p in stdlib_prompts.stdlib_eval_problems()]
    else:
        rows = []
        for rec in _records(spec):
            if isinstance(rec.data, DataError):
                raise rec.data
            rows.append(row_from_record(rec.data, rec.where))
    seen, ids, out = set(), set(), []
    for r in rows:
        key = exact_key(r.prompt)
        if key in seen:
            continue
        if r.id in ids:  # the per-reply log is keyed by id
            raise DataError(f"--prompts {spec}: id {r.id!r} is used by two different prompts; ids must be unique")
        seen.add(key)
        ids.add(r.id)
        out.append(r)
    out = out[:limit] if limit else out
    if not out:
        raise DataError(f"--prompts {spec}: no prompts found")
    return out
