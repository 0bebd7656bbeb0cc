"""A streamed reply from an OpenAI-compatible endpoint (``EndpointEngine.stream``), and the reading of a reply's
fields that the streamed and the whole replies share."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from starchat.errors import StarchatError
from starchat.inference.engine import Generation
from starchat.inference.params import Completion

# What the openai client raises on a body it cannot parse (not JSON, JSON of another shape); StarchatError
# (a ValueError) is always caught before these.
PARSE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError)
FINISH = {
    "stop": "stop",
    "length": "length",
    "content_filter": "stop",
    "tool_calls": "stop",
    "function_call": "stop",
    None: "stop",
}


class EndpointGeneration(Generation):
    """A streamed reply: iterate for text deltas; ``.completion`` is set at the end (as Engine.stream's).
    Iteration and ``drain`` are Generation's; there are no token ids here, so its __init__ is not used."""

    def __init__(self, engine, kind: str, response, cancel: threading.Event | None, max_new_tokens: int) -> None:
        """``engine``: the EndpointEngine that opened ``response`` (its URL, text checks and errors)."""
        self.engine, self.kind, self.response = engine, kind, response
        self.cancel = cancel or threading.Event()
        self.max_new_tokens = max_new_tokens
        self.completion: Completion | None = None
        self._iter = self._run()

    def close(self) -> None:
        self._iter.close()
        self.response.close()  # the server sees the disconnect and stops generating

    def _run(self) -> Iterator[str]:
        import openai

        engine = self.engine
        parts: list[str] = []
        reason, usage, room = "length", None, engine.text_cap(self.max_new_tokens)
        try:
            for chunk in self.response:
                if self.cancel.is_set():
                    reason = "cancelled"
                    break
                usage = getattr(chunk, "usage", None) or usage
                for choice in chunk.choices or []:
                    delta = engine.text_of(
                        choice.delta.content if self.kind == "chat" else choice.text, "a streamed delta"
                    )
                    if len(delta) > room:  # past max_new_tokens worth of text: the server ignores max_tokens
                        delta, reason = delta[:room], "cut"
                    room -= len(delta)
                    if delta:
                        parts.append(delta)
                        yield delta
                    if reason == "cut":
                        break
                    if choice.finish_reason is not None:
                        reason = FINISH.get(choice.finish_reason, "stop")
                if reason == "cut":
                    engine._report_cut(self.max_new_tokens, engine.text_cap(self.max_new_tokens))
                    reason = "length"
                    self.response.close()  # stop reading what it keeps sending
                    break
        except StarchatError:
            raise
        except openai.OpenAIError as e:
            raise engine._explain(e) from None
        except PARSE_ERRORS:  # a line that is not JSON, or JSON of another shape
            raise StarchatError(
                f"{engine.url} sent a malformed stream chunk (not the JSON of a completion "
                "chunk): is this an OpenAI-compatible /v1 endpoint?"
            ) from None
        finally:
            if reason == "cancelled":
                self.response.close()
        self.completion = Completion(
            text="".join(parts),
            token_ids=[],
            finish_reason=reason,
            prompt_tokens=_count(usage, "prompt_tokens"),
            completion_tokens=_count(usage, "completion_tokens"),
        )


def _count(usage: object, field: str) -> int:
    """A token count from ``usage``; 0 where the server gave none (or not a number): counts are informative."""
    value = getattr(usage, field, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
