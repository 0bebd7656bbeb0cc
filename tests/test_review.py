"""starchat.review: the problems the StarChat cards warn about are found, and clean replies stay quiet."""

from __future__ import annotations

import http.server
import threading

import pytest

from starchat.review import check_syntax, code_blocks, find_urls, review

CLEAN = "Use sorted():\n\n```python\ndef f(xs):\n    return sorted(xs)\n```\n\nThat is all."


def kinds(text: str, **kw) -> list[str]:
    return [f.kind for f in review(text, **kw)]


def test_clean_python_reply_has_no_findings():
    assert review(CLEAN) == []


def test_python_that_does_not_compile_names_block_and_line():
    text = "First:\n```py\nx = 1\n```\nthen:\n```python\ndef f(:\n    pass\n```"
    (f,) = review(text)
    assert (f.kind, f.block, f.line) == ("syntax", 2, 1)
    assert str(f).startswith("code block 2, line 1: Python that does not compile")


def test_insecure_call_is_flagged_by_bandit_with_its_cwe():
    text = "```python\nimport subprocess\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n```"
    (f,) = review(text)
    assert (f.kind, f.line, f.severity) == ("security", 4, "high")
    assert "shell=True" in f.message and "B602" in f.message and "CWE-78" in f.message


def test_low_severity_notes_are_left_out_by_default_and_shown_on_request():
    text = "```python\nimport pickle\n```"  # bandit: LOW severity, "consider the implications"
    assert review(text) == []
    assert kinds(text, min_severity="LOW") == ["security"]


def test_cut_off_block_is_reported_and_still_checked():
    assert kinds("```python\ndef f(:\n") == ["unclosed", "syntax"]


def test_open_fence_says_cut_off_only_when_generation_hit_the_limit():
    text = "```python\nx = 1\n"
    assert "cut off at the token limit" in review(text, finish_reason="length")[0].message
    for finish in ("stop", None):
        message = review(text, finish_reason=finish)[0].message
        assert "cut off" not in message and "left open" in message


def test_untagged_block_is_python_only_when_it_starts_like_python():
    assert kinds("```\ndef f(:\n```") == ["syntax"]
    assert kinds("```\n$ ls -la (\n```") == []  # shell output is not Python
    assert kinds("```bash\nif [ -f x ]; then echo; fi\n```") == []


def test_repl_transcript_keeps_only_its_input():
    text = "```pycon\n>>> x = [3, 1]\n>>> sorted(x)\n[1, 3]\n```"
    assert review(text) == []


def test_json_block_that_does_not_parse():
    (f,) = review('```json\n{\n  "a": 1,\n}\n```')
    assert (f.kind, f.line) == ("syntax", 3)


def test_fences_of_four_backticks_and_tildes():
    blocks = code_blocks("````md\n```python\nx\n```\n````\n~~~py\ny = 2\n~~~")
    assert [(b.lang, b.code, b.line, b.closed) for b in blocks] == [
        ("md", "```python\nx\n```\n", 2, True),
        ("py", "y = 2\n", 7, True),
    ]


def test_urls_are_listed_without_trailing_punctuation_and_once():
    text = "See https://docs.python.org/3/library/functions.html#sorted. Or (https://x.org/a), https://x.org/a!"
    assert find_urls(text) == ["https://docs.python.org/3/library/functions.html#sorted", "https://x.org/a"]
    assert kinds(text) == ["url", "url"]


def test_syntax_check_reports_the_first_error():
    assert check_syntax("a = 1\nb = (\n") is not None
    assert check_syntax("a = 1\n") is None


@pytest.fixture
def local_site():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200 if self.path == "/ok" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_check_urls_reports_only_the_broken_links(local_site):
    text = f"Docs: {local_site}/ok and {local_site}/made-up-page"
    (f,) = review(text, check_urls=True)
    assert (f.kind, f.severity) == ("url", "error")
    assert "HTTP 404" in f.message and f.message.endswith("/made-up-page")


DEEP = {"10k_plus": "x = " + "+".join(["1"] * 10_000) + "\n", "100k_minus": "x = " + "-" * 100_000 + "1\n"}


@pytest.mark.parametrize("code", DEEP.values(), ids=DEEP.keys())
def test_code_too_deep_for_the_parser_is_a_finding_not_a_crash(code):
    findings = review(f"```python\n{code}```")
    assert [(f.kind, f.block, f.severity) for f in findings] == [("syntax", 1, "error")]
    assert "does not compile: too deeply nested" in str(findings[0])
    assert "too deeply nested" in check_syntax(code)[1]


def test_json_too_deep_to_parse_is_a_finding():
    findings = review("```json\n" + "[" * 50_000 + "]" * 50_000 + "\n```")
    assert [(f.kind, f.message) for f in findings] == [("syntax", "JSON that does not parse: too deeply nested")]


def test_past_the_block_bound_a_limit_finding_says_what_was_not_reviewed():
    block = "```python\nimport os\n```\n"
    bad = "```python\ndef f(:\n```\n"
    findings = review(block * 3 + bad, max_blocks=3)  # the broken block is past the bound: not checked
    assert [(f.kind, str(f)) for f in findings] == [
        ("limit", "not reviewed: too large: only the first 3 of 4 code blocks were checked")
    ]
    assert [f.kind for f in review(block * 3 + bad, max_blocks=4)] == ["syntax"]


def test_past_the_size_bound_only_the_start_is_reviewed_and_a_cut_fence_is_not_blamed_on_the_model():
    text = "```python\ndef f(:\n```\n" + "```python\n" + "x = 1\n" * 100
    findings = review(text, max_chars=60)
    assert [(f.kind, f.block) for f in findings] == [("limit", None), ("syntax", 1)]
    assert str(findings[0]) == f"not reviewed: too large: only the first 60 of {len(text)} characters were checked"
