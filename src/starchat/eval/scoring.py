"""Scores a model's reply by what the StarChat cards warn about: failing tests, code that does not compile,
insecure code, an open code fence, invented links, and a reply cut off at the token limit.

`data pairs` ranks the k replies to a prompt with it; `eval humaneval` reports the share of flagged
replies with it. The criteria of one reply (``flags``) are plain data, logged per reply, so a score
can be recomputed from a log with other weights.

The score is a weighted sum (DEFAULT_WEIGHTS, override with ``parse_weights("syntax=-5,url=0")``):

    score = 4*passed - 3*syntax - 3*high - 2*medium - 0.5*low - 1*unclosed - 0.5*url - 1*cut_off

where each term is 1 when it applies and 0 otherwise: ``passed`` the row's tests pass in the sandbox
(0 when they fail or the row has none); ``syntax`` a Python block (or the extracted program) does
not compile; ``high``/``medium``/``low`` bandit reports a finding of that severity; ``unclosed`` a
code fence is left open; ``url`` the reply holds a link nobody checked; ``cut_off`` generation ran
to the token limit instead of ending its turn. Not covered: whether prose is right, code in other
languages, logic errors that the tests (when any) do not catch.
"""

from __future__ import annotations

from typing import Any

from starchat.errors import StarchatError

DEFAULT_WEIGHTS: dict[str, float] = {
    "passed": 4.0,
    "syntax": -3.0,
    "high": -3.0,
    "medium": -2.0,
    "low": -0.5,
    "unclosed": -1.0,
    "url": -0.5,
    "cut_off": -1.0,
}


def parse_weights(spec: str | dict | None) -> dict[str, float]:
    """The default weights with ``name=value,...`` (or a dict) applied over them."""
    weights = dict(DEFAULT_WEIGHTS)
    if not spec:
        return weights
    items = (
        spec.items() if isinstance(spec, dict) else (p.partition("=")[::2] for p in str(spec).split(",") if p.strip())
    )
    for name, value in items:
        name = str(name).strip()
        if name not in weights:
            raise StarchatError(f"--weights: unknown criterion {name!r}; known: {', '.join(DEFAULT_WEIGHTS)}")
        try:
            weights[name] = float(value)
        except (TypeError, ValueError):
            raise StarchatError(f"--weights: {name}={value!r} is not a number") from None
    return weights


def rule_text(weights: dict[str, float]) -> str:
    """The scoring rule as one line, for the stats and the README."""
    terms = [f"{w:+g}*{name}" for name, w in weights.items() if w]
    return "score = " + (" ".join(terms) if terms else "0") + " (each term 1 when it applies)"


def review_flags(reply: str, finish_reason: str | None = None, program: str | None = None) -> dict[str, Any]:
    """What `starchat.review` finds in ``reply``, as counts; ``program``: the code that was run, also checked
    for compiling (a reply without a fence is code too)."""
    from starchat.review import check_syntax, review

    findings = review(reply, min_severity="LOW", finish_reason=finish_reason)
    kinds = [f.kind for f in findings]
    severities = [f.severity for f in findings if f.kind == "security"]
    syntax = "syntax" in kinds or (program is not None and check_syntax(program) is not None)
    return {
        "syntax": int(syntax),
        "high": severities.count("high"),
        "medium": severities.count("medium"),
        "low": severities.count("low"),
        "unclosed": kinds.count("unclosed"),
        "url": kinds.count("url"),
        "cut_off": int(finish_reason == "length"),
        "finish_reason": finish_reason,
    }


def score(flags: dict[str, Any], weights: dict[str, float] | None = None) -> float:
    """The weighted sum of the module docstring; ``flags["passed"]`` is True/False, or None without tests."""
    w = weights or DEFAULT_WEIGHTS
    terms = {"passed": bool(flags.get("passed")), **{k: bool(flags.get(k)) for k in w if k != "passed"}}
    return round(sum(w[k] * terms[k] for k in w), 6)


def flagged(flags: dict[str, Any]) -> dict[str, bool]:
    """The three shares `eval` reports: does not compile, has bandit findings of medium or high severity
    (what the chat warns about; low ones are notes like `import subprocess` or `assert`), cut off."""
    return {
        "syntax": bool(flags.get("syntax")),
        "security": bool(flags.get("high") or flags.get("medium")),
        "cut_off": bool(flags.get("cut_off")),
    }


def flagged_shares(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Share of rows with each flag; cut-off counts only rows whose finish reason is known."""
    with_flags = [r["flags"] for r in rows if isinstance(r.get("flags"), dict)]
    if not with_flags:
        return {"syntax": None, "security": None, "cut_off": None}
    marks = [flagged(f) for f in with_flags]
    known = [m for m, f in zip(marks, with_flags) if f.get("finish_reason")]
    n = len(marks)
    return {
        "syntax": round(sum(m["syntax"] for m in marks) / n, 4),
        "security": round(sum(m["security"] for m in marks) / n, 4),
        "cut_off": round(sum(m["cut_off"] for m in known) / len(known), 4) if known else None,
    }
