"""Flags what the StarChat cards warn about in a reply: code that does not compile, insecure code, invented URLs.

What it checks:
- fenced code blocks: Python blocks (tagged python/py, or untagged ones that start like Python) must
  compile; JSON blocks must parse; a block left open is flagged, as cut off when generation hit the token
  limit (``finish_reason="length"``), else as a fence the model never closed;
- Python blocks that compile go through bandit (the PyCQA security linter) for insecure calls
  (shell=True, pickle on untrusted data, disabled TLS checks, weak hashes, hard-coded passwords, ...);
- URLs: every link is listed as unverified; with check_urls each one is requested (HEAD, then GET).

What it does not cover: code in other languages (shell, C, JavaScript, ...) is not compiled or
linted; bandit finds known-bad patterns, not logic flaws or vulnerable dependencies; a URL that
answers 200 may still not say what the model claims it says.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import tempfile
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

PYTHON_TAGS = {"python", "py", "python3", "py3", "pycon"}
# An untagged block is treated as Python only when its first line leaves little doubt.
_PYTHON_START = re.compile(r"^(def |class |import |from \S+ import |async def |@\w|if __name__|>>> )")
_OPEN_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)")
_URL = re.compile(r"https?://[^\s<>()\[\]{}\"'`]+")
_SEVERITY = {"LOW": 0, "MEDIUM": 1, "HIGH": 2}
# What one review checks at most; past it a "limit" finding says what was left out. A reply under a
# server's token caps stays well inside both, and each Python block costs a bandit run (~10-30 ms).
MAX_REVIEW_CHARS = 200_000
MAX_CODE_BLOCKS = 32


@dataclass
class CodeBlock:
    lang: str  # the info string's first word, lower-cased ('' when untagged)
    code: str  # each line ends in a newline, as in a file
    line: int  # 1-based line of the reply where the code starts
    closed: bool


@dataclass
class Finding:
    kind: str  # 'syntax', 'security', 'unclosed', 'url', 'limit' (part of the reply not reviewed: too large)
    message: str
    block: int | None = None  # 1-based code block number
    line: int | None = None  # line inside the block
    severity: str = "warning"

    def __str__(self) -> str:
        where = f"code block {self.block}" if self.block else ""
        if self.line and where:
            where += f", line {self.line}"
        return f"{where}: {self.message}" if where else self.message


def code_blocks(text: str) -> list[CodeBlock]:
    """The fenced blocks of a markdown reply (``` or ~~~, closed by a fence of the same kind and length)."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = _OPEN_FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i + 1
        end = next(
            (
                j
                for j in range(start, len(lines))
                if lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0])
            ),
            None,
        )
        body = lines[start : end if end is not None else len(lines)]
        if end is None and body and body[-1] == "":  # the reply's final newline, not a line of code
            body.pop()
        blocks.append(CodeBlock(lang, "".join(line + "\n" for line in body), start + 1, end is not None))
        i = (end if end is not None else len(lines)) + 1
    return blocks


def _python_source(block: CodeBlock) -> str | None:
    """The block as a Python module, or None when it is not Python. REPL sessions keep only their input."""
    first = next((ln.strip() for ln in block.code.splitlines() if ln.strip()), "")
    if block.lang not in PYTHON_TAGS and not (block.lang == "" and _PYTHON_START.match(first)):
        return None
    if first.startswith(">>>"):  # a doctest/REPL transcript: output lines are not code
        return "\n".join(ln.strip()[4:] for ln in block.code.splitlines() if ln.strip().startswith((">>>", "...")))
    return textwrap.dedent(block.code)


TOO_DEEP = "too deeply nested (the parser's depth limit; e.g. thousands of chained operators)"


def check_syntax(source: str) -> tuple[int, str] | None:
    """(line, message) of the first syntax error, or None when it compiles. Never raises: code nested past
    the parser's limits (a 10,000-term ``1+1+...``, 100,000 unary minuses) is an error too, not a crash.

    The parse is bounded: CPython's parser stops at a fixed depth (RecursionError / MemoryError from
    its stack overflow, SystemError in some versions) in time linear in the source, and callers bound
    the source's size (``MAX_REVIEW_CHARS``)."""
    try:
        ast.parse(source)
    except SyntaxError as e:
        return e.lineno or 1, e.msg
    except ValueError as e:  # e.g. NUL bytes
        return 1, str(e)
    except (RecursionError, MemoryError, SystemError):
        return 1, TOO_DEEP
    return None


def check_security(source: str, min_severity: str = "MEDIUM") -> list[tuple[int, str, str]]:
    """(line, severity, message) of bandit's findings at or above ``min_severity`` with at least medium
    confidence. Empty when bandit is not installed."""
    # bandit's plugin loader warns about a deprecated stevedore argument; not the user's concern in a chat.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from bandit.core import config as bandit_config
            from bandit.core import manager as bandit_manager
        except ImportError:  # pragma: no cover - a dependency; review still checks syntax and links without it
            return []
        logging.getLogger("bandit").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "reply.py"
            path.write_text(source, encoding="utf-8")
            mgr = bandit_manager.BanditManager(bandit_config.BanditConfig(), "file", quiet=True)
            mgr.discover_files([str(path)])
            mgr.run_tests()
            issues = mgr.get_issue_list()
    out = []
    for it in issues:
        if _SEVERITY[it.severity] >= _SEVERITY[min_severity] and _SEVERITY[it.confidence] >= 1:
            cwe = f", CWE-{it.cwe.id}" if getattr(it, "cwe", None) and it.cwe.id else ""
            out.append((it.lineno, it.severity.lower(), f"{it.text.rstrip('.')} ({it.test_id}{cwe})"))
    return out


def find_urls(text: str) -> list[str]:
    """The distinct http(s) links in a reply, in order, without trailing punctuation."""
    urls = [u.rstrip(".,;:!?*_") for u in _URL.findall(text)]
    return list(dict.fromkeys(u for u in urls if len(u) > len("https://")))


def check_url(url: str, timeout: float = 5.0) -> str | None:
    """None when the URL answers with a success or redirect status; otherwise why not."""
    import urllib.error
    import urllib.request

    for method in ("HEAD", "GET"):  # some servers refuse HEAD
        req = urllib.request.Request(url, method=method, headers={"User-Agent": "starchat-review"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only, by _URL
                if resp.status < 400:
                    return None
                status = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            status = f"HTTP {e.code}"
            e.close()
            if method == "HEAD" and e.code in (403, 405, 501):
                continue
        except (urllib.error.URLError, OSError, ValueError) as e:
            return f"unreachable ({getattr(e, 'reason', e)})"
        return status
    return status


def unclosed_message(finish_reason: str | None) -> str:
    """Why a code fence is open: "cut off" only when generation hit the token limit."""
    if finish_reason == "length":
        return "not closed: the reply was cut off at the token limit (raise max_new_tokens)"
    return "not closed: the code fence was left open (the reply ended without a closing ```)"


def review(
    text: str,
    check_urls: bool = False,
    min_severity: str = "MEDIUM",
    timeout: float = 5.0,
    finish_reason: str | None = None,
    max_chars: int = MAX_REVIEW_CHARS,
    max_blocks: int = MAX_CODE_BLOCKS,
) -> list[Finding]:
    """Everything worth a warning in one reply; ``finish_reason`` ("stop", "length", ...) says how it ended.

    Bounded: only the first ``max_chars`` characters and, of those, the first ``max_blocks`` code blocks
    (and as many links) are checked; past a bound a ``limit`` finding ("not reviewed: too large") says
    what was left out."""
    findings: list[Finding] = []
    blocks = code_blocks(text[:max_chars])
    if len(text) > max_chars:
        findings.append(
            Finding(
                "limit", f"not reviewed: too large: only the first {max_chars} of {len(text)} characters were checked"
            )
        )
        text = text[:max_chars]
        if blocks and not blocks[-1].closed:  # cut by this bound, not by the model: not a finding
            blocks.pop()
    if len(blocks) > max_blocks:
        findings.append(
            Finding(
                "limit",
                f"not reviewed: too large: only the first {max_blocks} of {len(blocks)} code blocks were checked",
            )
        )
        blocks = blocks[:max_blocks]
    for n, block in enumerate(blocks, 1):
        if not block.closed:
            findings.append(Finding("unclosed", unclosed_message(finish_reason), n))
        source = _python_source(block)
        if source is not None:
            err = check_syntax(source)
            if err:
                findings.append(Finding("syntax", f"Python that does not compile: {err[1]}", n, err[0], "error"))
            else:
                findings += [
                    Finding("security", msg, n, line, sev) for line, sev, msg in check_security(source, min_severity)
                ]
        elif block.lang == "json":
            try:
                json.loads(block.code)
            except json.JSONDecodeError as e:
                findings.append(Finding("syntax", f"JSON that does not parse: {e.msg}", n, e.lineno, "error"))
            except RecursionError:
                findings.append(Finding("syntax", "JSON that does not parse: too deeply nested", n, 1, "error"))
    urls = find_urls(text)
    if len(urls) > max_blocks:  # each one is a finding, and with check_urls a request of up to 2 * timeout
        findings.append(
            Finding("limit", f"not reviewed: too large: only the first {max_blocks} of {len(urls)} links were checked")
        )
        urls = urls[:max_blocks]
    for url in urls:
        if not check_urls:
            findings.append(Finding("url", f"unverified link (models invent URLs): {url}"))
        elif (why := check_url(url, timeout)) is not None:
            findings.append(Finding("url", f"broken link, {why}: {url}", severity="error"))
    return findings
