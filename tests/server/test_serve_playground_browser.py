"""The playground in a real headless Chromium (Debian's, driven by playwright): stream, stop, render, persist."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from serverkit import SlowEngine, live_server

from starchat.server import ServerSettings, create_app

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".runs" / "test-artifacts"

pytestmark = pytest.mark.slow


def _need_browser():
    """Skip where there is no Chromium, except in CI, where that is a broken setup and must fail."""
    missing = []
    if CHROMIUM is None:
        missing.append("Debian's chromium (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright==1.65.2)")
    if missing:
        why = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + "; CI must install it (.ci/run)")
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_prompt_streams_an_answer_that_survives_a_reload(page, tiny_engine):
    app = create_app(tiny_engine, ServerSettings())
    with live_server(app) as url:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model-name').textContent.startsWith('Model: tiny-model')")
        page.fill("#system", "You are a terse assistant.")
        page.eval_on_selector("#max_tokens", "el => { el.value = 48; el.dispatchEvent(new Event('input')); }")
        page.eval_on_selector("#repetition_penalty", "el => { el.value = 2; el.dispatchEvent(new Event('input')); }")
        page.fill("#prompt", "Write a Python function that reverses a string")
        page.click("#send")
        # the tiny model may finish before a wait for the streaming state starts; streaming itself is
        # checked with a slow engine in the Stop test below
        page.wait_for_selector(".msg.assistant:not(.streaming)", timeout=60_000)
        answer = page.inner_text(".msg.assistant .body")
        assert answer.strip(), "no text streamed into the reply"
        assert page.inner_text(".msg.user .body") == "Write a Python function that reverses a string"
        # the status counts tokens, from the stream's final usage chunk (not the chunks it received)
        status = page.inner_text("#status")
        assert re.fullmatch(r"\d+ tokens in \d+\.\d s \(\d+\.\d tokens/s\)", status), status
        assert 1 <= int(status.split()[0]) <= 48
        path = _shot(page, "playground-answer.png")
        assert path.stat().st_size > 10_000
        page.reload()  # the conversation and the settings are kept on the page (localStorage)
        page.wait_for_selector(".msg.assistant")
        assert page.inner_text(".msg.assistant .body") == answer
        assert page.input_value("#system") == "You are a terse assistant."
        assert page.input_value("#max_tokens") == "48"
        page.click("#clear")
        assert page.locator(".msg").count() == 0 and page.locator("button.example").count() == 4


def test_stop_ends_the_stream_and_frees_the_server(page):
    engine = SlowEngine(delay=0.05)
    app = create_app(engine, ServerSettings())
    with live_server(app) as url:
        page.goto(url + "/")
        page.click("button.example >> nth=0")  # an example prompt sends itself
        page.wait_for_function("document.querySelector('.msg.assistant .body').textContent.split(' ').length > 4")
        assert page.is_enabled("#stop") and not page.is_enabled("#send")
        page.click("#stop")
        page.wait_for_selector(".msg.assistant:not(.streaming)")
        assert "(stopped)" in page.inner_text(".msg.assistant .who")
        assert page.is_enabled("#send") and page.is_enabled("#regen")
        _shot(page, "playground-stopped.png")
        deadline = time.monotonic() + 5
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0, "the server kept generating after Stop"
        shown = page.inner_text(".msg.assistant .body")
        time.sleep(0.3)
        assert page.inner_text(".msg.assistant .body") == shown  # nothing more arrives
        page.click("#regen")  # replaces the stopped reply with a new one
        page.wait_for_selector(".msg.assistant.streaming")
        page.click("#stop")
        page.wait_for_selector(".msg.assistant:not(.streaming)")
        assert page.locator(".msg.assistant").count() == 1 and page.locator(".msg.user").count() == 1


def test_markdown_code_blocks_are_highlighted_and_copyable(page, tiny_engine):
    app = create_app(tiny_engine, ServerSettings())
    with live_server(app) as url:
        page.goto(url + "/")
        md = "Use **sorted**:\n\n```python\ndef f(xs):\n    return sorted(xs)  # new list\n```\n\n- one\n- `two`\n<script>x</script>"
        page.evaluate(
            "md => { document.getElementById('chat').innerHTML = "
            "'<div class=\"msg assistant\"><div class=\"body\">' + renderMarkdown(md) + '</div></div>'; }",
            md,
        )
        assert page.inner_text(".codeblock .lang") == "python"
        assert page.locator(".codeblock .tok-kw", has_text="def").count() == 1
        assert page.locator(".codeblock .tok-com").inner_text() == "# new list"
        assert page.locator("strong").inner_text() == "sorted"
        assert page.locator("li code").inner_text() == "two"
        assert page.locator("script", has_text="x").count() == 0  # model output is escaped, never run
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.click(".copy")
        # The label changes after the asynchronous clipboard write (and back after 1.5 s): wait for it, as
        # reading it at once failed on a loaded CPU.
        page.wait_for_function("document.querySelector('.copy').textContent === 'Copied!'", timeout=5000)
        assert page.evaluate("navigator.clipboard.readText()") == "def f(xs):\n    return sorted(xs)  # new list"
        _shot(page, "playground-markdown.png")


def test_reply_warnings_from_the_review_are_shown_under_it(page, tiny_engine):
    reply = "Try:\n```python\nimport subprocess\nsubprocess.call(cmd, shell=True)\n```\nDocs: https://made.up/x"
    chunk = json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": reply}, "finish_reason": None}],
        }
    )
    app = create_app(tiny_engine, ServerSettings())
    with live_server(app) as url:
        # The model's reply is scripted; the review comes from the real server.
        page.route(
            "**/v1/chat/completions",
            lambda route: route.fulfill(
                status=200, headers={"Content-Type": "text/event-stream"}, body=f"data: {chunk}\n\ndata: [DONE]\n\n"
            ),
        )
        page.goto(url + "/")
        page.fill("#prompt", "Run a shell command")
        page.click("#send")
        page.wait_for_selector(".msg.assistant .warnings li >> nth=1")
        warnings = page.locator(".msg.assistant .warnings li").all_inner_texts()
        assert len(warnings) == 2
        assert "shell=True" in warnings[0] and "line 2" in warnings[0]
        assert warnings[1] == "⚠ unverified link (models invent URLs): https://made.up/x"
        _shot(page, "playground-warnings.png")
        page.reload()  # the warnings are kept with the conversation
        page.wait_for_selector(".msg.assistant .warnings")
        assert page.locator(".msg.assistant .warnings li").count() == 2


def _chunk(content=None, usage=None):
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
            "usage": usage,
        }
    )


def test_status_counts_tokens_from_the_usage_not_chunks(page, tiny_engine):
    # three chunks carrying 7 tokens (a server may merge tokens into one chunk): the status says 7
    body = (
        "".join(
            f"data: {c}\n\n"
            for c in (
                _chunk("Hello "),
                _chunk("there, "),
                _chunk("friend."),
                _chunk(usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
            )
        )
        + "data: [DONE]\n\n"
    )
    requests = []

    def fulfill(route):
        requests.append(json.loads(route.request.post_data))
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    app = create_app(tiny_engine, ServerSettings())
    with live_server(app) as url:
        page.route("**/v1/chat/completions", fulfill)
        page.goto(url + "/")
        page.fill("#prompt", "Say hello")
        page.click("#send")
        page.wait_for_function("document.getElementById('status').textContent.includes(' in ')")
        assert page.inner_text("#status").startswith("7 tokens in ")
        assert requests[0]["stream_options"] == {"include_usage": True}
        assert page.inner_text(".msg.assistant .body") == "Hello there, friend."


def test_markdown_tables_render_as_tables(page, tiny_engine):
    app = create_app(tiny_engine, ServerSettings())
    with live_server(app) as url:
        page.goto(url + "/")
        md = (
            "Complexity:\n\n| op | list | `set` |\n|:---|:---:|---:|\n| lookup | O(n) | **O(1)** |\n"
            "| a \\| b | <b>x</b> |\n\nafter | the table"
        )
        page.evaluate(
            "md => { document.getElementById('chat').innerHTML = "
            "'<div class=\"msg assistant\"><div class=\"body\">' + renderMarkdown(md) + '</div></div>'; }",
            md,
        )
        assert page.locator("table").count() == 1
        assert page.locator("th").all_inner_texts() == ["op", "list", "set"]
        assert page.locator("th code").inner_text() == "set"
        cells = page.locator("tbody tr").evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        assert cells == [["lookup", "O(n)", "O(1)"], ["a | b", "<b>x</b>", ""]]  # escaped; short rows padded
        assert page.locator("td strong").inner_text() == "O(1)"
        aligns = page.locator("th").evaluate_all("hs => hs.map(h => h.style.textAlign)")
        assert aligns == ["left", "center", "right"]
        assert "|" not in page.inner_text("table >> nth=0").replace("a | b", "")  # no raw pipes left
        assert page.locator("p", has_text="after | the table").count() == 1  # a line after it is text again
        _shot(page, "playground-table.png")


def test_settings_are_reachable_on_a_narrow_screen(browser, tiny_engine):
    app = create_app(tiny_engine, ServerSettings())
    ctx = browser.new_context(viewport={"width": 600, "height": 900})
    page = ctx.new_page()
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    try:
        with live_server(app) as url:
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model-name').textContent.startsWith('Model: ')")
            assert not page.is_visible("aside") and page.is_visible("#settings-toggle")
            _shot(page, "playground-narrow.png")
            page.click("#settings-toggle")
            assert page.is_visible("aside") and page.get_attribute("#settings-toggle", "aria-expanded") == "true"
            box = page.locator("aside").bounding_box()
            assert box["x"] == 0 and box["width"] <= 600
            page.fill("#system", "Be brief.")
            page.locator("#temperature").fill("0.7")  # the sliders work inside the drawer
            assert page.inner_text("#temperature-v") == "0.7"
            _shot(page, "playground-narrow-settings.png")
            page.mouse.click(580, 450)  # the backdrop beside the drawer closes it
            assert not page.is_visible("aside")
            page.click("#settings-toggle")
            page.keyboard.press("Escape")
            assert not page.is_visible("aside")
            page.set_viewport_size({"width": 1200, "height": 800})  # wide: the sidebar, no toggle
            assert page.is_visible("aside") and not page.is_visible("#settings-toggle")
            assert page.input_value("#system") == "Be brief."
        assert missing == []  # favicon included
    finally:
        ctx.close()


@pytest.mark.parametrize("finish, says", [("length", "cut off at the token limit"), ("stop", "left open")])
def test_open_fence_warning_follows_the_finish_reason(page, tiny_engine, finish, says):
    def chunk(delta, reason):
        return json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
            }
        )

    first, last = chunk({"content": "Here:\n```python\nx = 1\n"}, None), chunk({}, finish)
    body = f"data: {first}\n\ndata: {last}\n\ndata: [DONE]\n\n"
    app = create_app(tiny_engine, ServerSettings())
    with live_server(app) as url:
        page.route(
            "**/v1/chat/completions",
            lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body),
        )
        page.goto(url + "/")
        page.fill("#prompt", "Set x")
        page.click("#send")
        page.wait_for_selector(".msg.assistant .warnings li")
        warnings = page.locator(".msg.assistant .warnings li").all_inner_texts()
        assert len(warnings) == 1 and says in warnings[0] and ("cut off" in warnings[0]) == (finish == "length")
