"""What the chat tells the user about a reply that hit the token limit: cut off (raise max_new_tokens) or a
model that repeated itself until the limit (more tokens would only buy more repeats)."""

from __future__ import annotations

import dataclasses

MAX_PERIOD_LINES = 20  # a repeated block longer than this is not what small models loop on
MAX_PERIOD_CHARS = 64  # a phrase repeated inside one line ("0, 0, 0, ..." or "the the the")
MIN_LOOP_CHARS = 80  # a repeated stretch shorter than this is not worth a warning
LOOKBACK_CHARS = 8192  # only the reply's end decides; bounds the work on a long reply


def repeated_tail(text: str) -> str | None:
    """How the reply's end repeats itself ("the same 3 lines 5 times"), or None when it does not.

    The reply is read from its end, as a cut-off reply ends mid-loop: lines (or, inside one line,
    characters) that equal the ones a period before them. A period of lines must come back 3 times
    (a single line 4 times) and the repeated stretch be at least MIN_LOOP_CHARS long.
    """
    text = text[-LOOKBACK_CHARS:]
    lines = [ln.rstrip() for ln in text.split("\n")]
    if len(lines) > 1:
        lines.pop()  # the last line is partial when generation stopped mid-line (and '' after a final newline)
    while lines and not lines[-1]:
        lines.pop()
    for period in range(1, min(MAX_PERIOD_LINES, len(lines) // 3) + 1):
        unit = lines[-period:]
        if not any(unit):
            continue
        run = _periodic_run(lines, period)
        repeats = (run + period) // period
        if repeats >= (4 if period == 1 else 3) and len("\n".join(lines[-(run + period):])) >= MIN_LOOP_CHARS:
            what = "line" if period == 1 else f"{period} lines"
            return f"the same {what} {repeats} times"
    chars = text.rstrip()
    for period in range(1, MAX_PERIOD_CHARS + 1):
        run = _periodic_run(chars, period)
        if run + period >= MIN_LOOP_CHARS and (run + period) // period >= 4:
            phrase = chars[-period:].strip() or chars[-period:]
            return f"{phrase[:40]!r} over and over"
    return None


def _periodic_run(seq, period: int) -> int:
    """How many items at the end of ``seq`` equal the item ``period`` before them."""
    n = 0
    while n + period < len(seq) and seq[len(seq) - 1 - n] == seq[len(seq) - 1 - n - period]:
        n += 1
    return n


def loop_message(loop: str) -> str:
    return (f"the model repeated itself until the token limit ({loop}); a larger max_new_tokens would only "
            "buy more repeats: /retry, or ask again in other words")


def explain_ending(findings: list, text: str, finish_reason: str | None) -> list:
    """``findings`` (from starchat.review) with the token limit explained: a fence left open by a model that
    looped says so instead of "raise max_new_tokens", and a looping reply gets a warning of its own."""
    if finish_reason != "length" or (loop := repeated_tail(text)) is None:
        return findings
    out = [dataclasses.replace(f, message=f"not closed: {loop_message(loop)}") if f.kind == "unclosed" else f
           for f in findings]
    if not any(f.kind == "unclosed" for f in findings):
        from starchat.review import Finding

        out.insert(0, Finding("loop", loop_message(loop)))
    return out
