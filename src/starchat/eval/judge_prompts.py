"""The judge's inputs and outputs as text: prompt sets (shipped or JSONL), the pairwise judge prompt, verdict parsing."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError

SHIPPED = "coding"  # src/starchat/eval/prompts/coding.jsonl (CC0-1.0, our own writing)

JUDGE_SYSTEM = (
    "You are an impartial reviewer of answers to programming questions. You compare two assistants' answers "
    "to the same request and decide which one serves the user better."
)

# Our own wording, in the spirit of MT-Bench's pairwise prompt, weighted for code: correctness first.
JUDGE_TEMPLATE = """Compare the two answers to the user's request below.

Judge them in this order of importance:
1. Correctness: does the code run and do what was asked (edge cases included)? Is the explanation true?
2. Completeness: does it answer the whole request (for a bug: the cause and the fix; for tests: real checks)?
3. Clarity: is it easy to follow, with only the explanation that helps?
Ignore the order in which the answers are shown, their length as such, and the assistants' names.

[User request]
{question}

[Start of Assistant A's answer]
{answer_a}
[End of Assistant A's answer]

[Start of Assistant B's answer]
{answer_b}
[End of Assistant B's answer]

First explain your comparison in a few sentences. Then give your verdict on the last line, exactly one of:
[[A]] if Assistant A's answer is better, [[B]] if Assistant B's answer is better, [[C]] for a tie."""

RETRY_REQUEST = "Give only your final verdict now, exactly one of [[A]], [[B]] or [[C]]."
RETRY_PREFILL = "My final verdict: [["  # where the judge runs locally, its retry answer starts with this


def load_prompts(spec: str | None = None) -> list[dict[str, Any]]:
    """A prompt set: None or ``coding`` is the shipped set; anything else is a JSONL file.

    Each line is an object with ``prompt`` (or ``question``, or MT-Bench's ``turns``, whose first turn
    is used), and optionally ``id`` (or ``question_id``), ``category``, ``language``. A bad line is a
    StarchatError naming ``FILE:LINE``.
    """
    if spec in (None, SHIPPED):
        path = resources.files("starchat.eval").joinpath("prompts/coding.jsonl")
        text, name = path.read_text("utf-8"), "starchat/eval/prompts/coding.jsonl"
    else:
        p = Path(spec).expanduser()
        if not p.is_file():
            raise StarchatError(
                f'--prompts {spec}: no such file; give a JSONL file (one {{"prompt": ...}} per '
                f"line) or leave it out for the shipped coding set"
            )
        text, name = _read_utf8(p), str(p)
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        rec = _record(name, no, line)
        if rec["id"] in seen:
            raise StarchatError(
                f"{name}:{no}: id {rec['id']!r} was already used on line {seen[rec['id']]}; "
                "give every prompt its own id"
            )
        seen[rec["id"]] = no
        out.append(rec)
    if not out:
        raise StarchatError(f"{name}: no prompts in the file")
    return out


def _read_utf8(p: Path) -> str:
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise StarchatError(
            f"{p}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); save the prompts as UTF-8"
        ) from None


def _check_text(name: str, no: int, field: str, value: str) -> None:
    """A lone surrogate (JSON's "\\ud800" escape without its pair) is no text: no tokenizer, file or hash takes it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise StarchatError(
            f"{name}:{no}: field {field!r} holds a lone surrogate (U+{ord(value[e.start]):04X} at "
            f"character {e.start}), which is not text; write the character itself, or its "
            "escape as a full \\uD8xx\\uDCxx pair"
        ) from None


def _record(name: str, no: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise StarchatError(f"{name}:{no}: not valid JSON ({e.msg}); each line must be one JSON object") from None
    if not isinstance(obj, dict):
        raise StarchatError(f"{name}:{no}: expected a JSON object, got {type(obj).__name__}")
    prompt = obj.get("prompt", obj.get("question"))
    if prompt is None and isinstance(obj.get("turns"), list) and obj["turns"]:
        prompt = obj["turns"][0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise StarchatError(
            f"{name}:{no}: field 'prompt' is missing or empty; give the request as "
            '"prompt" (or "question", or MT-Bench\'s "turns")'
        )
    pid = obj.get("id", obj.get("question_id", no))
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise StarchatError(f"{name}:{no}: field 'id' must be a string or an integer")
    rec = {
        "id": str(pid),
        "prompt": prompt,
        "category": str(obj.get("category") or ""),
        "language": str(obj.get("language") or ""),
    }
    for field, value in rec.items():
        _check_text(name, no, field, value)
    return rec


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """The judge's chat request for one ordered pair of answers."""
    user = JUDGE_TEMPLATE.format(question=question, answer_a=answer_a, answer_b=answer_b)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def retry_messages(messages: list[dict[str, str]], reply: str) -> list[dict[str, str]]:
    """The follow-up turn for a judgment without a readable verdict: the judge's reply, then a request
    for the verdict alone (a real second try even for a greedy judge, whose first reply would repeat)."""
    return [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": RETRY_REQUEST}]


# A label: A, B or C/tie, with the arena-style A>B, B>A, A=B variants.
_LABEL = r"(A\s*>>?\s*B|B\s*>>?\s*A|A\s*=\s*B|A|B|C|TIE)"
_DOUBLE = re.compile(r"\[\[\s*" + _LABEL + r"\s*\]\]", re.I)
_SINGLE = re.compile(r"(?<!\[)\[\s*" + _LABEL + r"\s*\](?!\])", re.I)
# The label itself is case-sensitive ("the winner is a..." is no verdict), the words around it are not.
_STATED = re.compile(
    r"(?:final\s+)?(?:verdict|decision|winner)[\s*_`\"':\-]*(?:is[\s*_`\"':\-]*)?"
    r"(?:assistant\s+)?((?-i:A|B|C)|tie)\b",
    re.I,
)
_BETTER = re.compile(r"\bassistant\s+(A|B)(?:'s\s+answer)?\s+is\s+(?:clearly\s+|slightly\s+|much\s+)?better\b", re.I)
_TIED = re.compile(
    r"\b(?:it'?s\s+a\s+tie|(?:both|the two)\s+(?:answers\s+)?are\s+(?:equally\s+good|"
    r"equally\s+bad|equal|tied))\b",
    re.I,
)


def _norm(label: str) -> str:
    label = re.sub(r"\s+", "", label).upper()
    if label in ("A", "A>B", "A>>B"):
        return "A"
    if label in ("B", "B>A", "B>>A"):
        return "B"
    return "C"


def parse_verdict(text: str) -> str | None:
    """``A``, ``B`` or ``C`` (tie) from a judge's reply; None when it holds no clear verdict.

    Tried in order: ``[[A]]`` style (also ``[[A>B]]``, ``[[tie]]``), then ``[A]``, then a stated
    "Verdict: A" / "Final verdict: Assistant B", then "Assistant A is better" / "it's a tie". When a
    form occurs with different labels (a judge restating the options), the one on the last line that
    has any wins; if that line is ambiguous too, the reply has no verdict.
    """
    if not text:
        return None
    for pattern in (_DOUBLE, _SINGLE, _STATED):
        found = _decide(text, pattern)
        if found:
            return found
    better = {m.upper() for m in _BETTER.findall(text)}
    tied = bool(_TIED.search(text))
    if len(better) == 1 and not tied:
        return better.pop()
    if tied and not better:
        return "C"
    return None


def _decide(text: str, pattern: re.Pattern) -> str | None:
    labels = {_norm(m) for m in pattern.findall(text)}
    if len(labels) == 1:
        return labels.pop()
    if not labels:
        return None
    for line in reversed(text.strip().splitlines()):
        on_line = {_norm(m) for m in pattern.findall(line)}
        if on_line:
            return on_line.pop() if len(on_line) == 1 else None
    return None
