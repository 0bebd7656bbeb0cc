"""Token IDs -> text, incrementally: clean UTF-8 deltas and stop strings found even when split across tokens."""

from __future__ import annotations

from typing import Callable, Sequence

# How many prompt tokens to decode along with the first generated ones: SentencePiece-style
# tokenizers drop a leading space when a token is decoded alone.
PREFIX_CONTEXT = 4


class TextAssembler:
    """Feed generated token IDs one by one; get text deltas that never split a stop string.

    Decoding follows the offset scheme of text-generation-inference: decode a short window of
    recent tokens and emit only what it adds, waiting while the tail is an incomplete UTF-8
    character (decoded as U+FFFD). Stop strings are searched in the decoded text, so a stop
    string spread over several tokens is still found; text that might be the start of a stop
    string is held back until it is known not to be.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = (),
                 prompt_tail: Sequence[int] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._max_stop = max((len(s) for s in self._stop), default=0)
        self._ids = list(prompt_tail[-PREFIX_CONTEXT:]) if prompt_tail else []
        self._prefix = 0
        self._read = len(self._ids)
        self.text = ""  # decoded text so far, cut at a stop string once one is found
        self._emitted = 0
        self.stopped = False  # a stop string was found

    def feed(self, token_id: int) -> str:
        """Add one generated token; returns the text that is now safe to show (maybe "")."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next token
        self._append(new_text[len(prefix_text):])
        self._prefix, self._read = self._read, len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: returns whatever is still held back."""
        if not self.stopped and self._read < len(self._ids):
            prefix_text = self._decode(self._ids[self._prefix:self._read])
            tail = self._decode(self._ids[self._prefix:])[len(prefix_text):]
            self._append(tail.rstrip("\ufffd"))
        return self._release(final=True)

    def _append(self, delta: str) -> None:
        start = max(0, len(self.text) - self._max_stop + 1)
        self.text += delta
        hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            self.stopped = True

    def _release(self, final: bool) -> str:
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held_back()
        delta = self.text[self._emitted:end]
        self._emitted = max(self._emitted, end)
        return delta

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        for n in range(min(self._max_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self._stop):
                return n
        return 0
