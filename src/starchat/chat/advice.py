"""What the chat tells the user about a reply that hit the token limit: cut off (raise max_new_tokens) or a
model that repeated itself until the limit (more tokens would only buy more repeats)."""

from __future__ import annotations

import dataclasses
import re

MAX_PERIOD_LINES = 20  # a repeated block longer than this is not what small models loop on
MAX_PERIOD_CHARS = 64  # a phrase repeated inside one line ("0, 0, 0, ..." or "the the the")
MIN_LOOP_CHARS = 80  # a repeated stretch shorter than this is not worth a warning
LOOKBACK_CHARS = 8192  # only the reply's end decides; bounds the work on a long reply
DUP_WINDOW = 24  # non-blank lines at the end checked for "the same few lines, in any order"
_DIGITS = re.compile(r"\d+")


def repeated_tail(text: str) -> str | None:
    """How the reply's end repeats itself ("the same 3 lines 5 times"), or None when it does not.

    The reply is read from its end, as a cut-off reply ends mid-loop, with every number counted as the same
    (a model counting ``kwargs[6], kwargs[7], ...`` or ``1, 2, 3, ...`` until the limit loops too):
    a block of lines that comes back 3 times (one line: 4 times), a phrase inside a line 4 times, or the last
    DUP_WINDOW lines made of a third as many distinct ones; the repeated stretch is MIN_LOOP_CHARS or more.
    """
    original = text[-LOOKBACK_CHARS:]
    text = _DIGITS.sub("0", original)
    lines = [ln.rstrip() for ln in text.split("\n")]
    if len(lines) > 1:
        lines.pop()  # the last line is partial when generation stopped mid-line (and '' after a final newline)
    while lines and not lines[-1]:
        lines.pop()
    for period in range(1, min(MAX_PERIOD_LINES, len(lines) // 3) + 1):
        if not any(lines[-period:]):
            continue
        run = _periodic_run(lines, period)
        repeats = (run + period) // period
        if repeats >= (4 if period == 1 else 3) and len("\n".join(lines[-(run + period) :])) >= MIN_LOOP_CHARS:
            what = "line" if period == 1 else f"{period} lines"
            return f"the same {what} {repeats} times"
    chars = text.rstrip()
    for period in range(1, MAX_PERIOD_CHARS + 1):
        run = _periodic_run(chars, period)
        if run + period >= MIN_LOOP_CHARS and (run + period) // period >= 4:
            phrase = chars[-period:].strip() or chars[-period:]
            if "0" in phrase and phrase not in original:  # the numbers in it change: show the pattern
                return f"{phrase[:40]!r} over and over, with the numbers counting up"
            return f"{phrase[:40]!r} over and over"
    last = [ln for ln in lines if ln.strip()][-DUP_WINDOW:]
    if len(last) == DUP_WINDOW and len(set(last)) * 3 <= DUP_WINDOW:
        return f"the same {len(set(last))} lines, in some order, make up its last {DUP_WINDOW}"
    return None


def _periodic_run(seq, period: int) -> int:
    """How many items at the end of ``seq`` equal the item ``period`` before them."""
    n = 0
    while n + period < len(seq) and seq[len(seq) - 1 - n] == seq[len(seq) - 1 - n - period]:
        n += 1
    return n


def loop_message(loop: str) -> str:
    return (
        f"the model repeated itself until the token limit ({loop}); a larger max_new_tokens would only "
        "buy more repeats: /retry, or ask again in other words"
    )


def explain_ending(findings: list, text: str, finish_reason: str | None) -> list:
    """``findings`` (from starchat.review) with the token limit explained: a fence left open by a model that
    looped says so instead of "raise max_new_tokens", and a looping reply gets a warning of its own."""
    if finish_reason != "length" or (loop := repeated_tail(text)) is None:
        return findings
    out = [
        dataclasses.replace(f, message=f"not closed: {loop_message(loop)}") if f.kind == "unclosed" else f
        for f in findings
    ]
    if not any(f.kind == "unclosed" for f in findings):
        from starchat.review import Finding

        out.insert(0, Finding("loop", loop_message(loop)))
    return out
