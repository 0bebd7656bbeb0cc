"""Token IDs -> text, incrementally: clean UTF-8 deltas and stop strings found even when split across tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# How many prompt tokens to decode along with the first generated ones: SentencePiece-style
# tokenizers drop a leading space when a token is decoded alone.
PREFIX_CONTEXT = 4


class TextAssembler:
    """Feed generated token IDs one by one; get text deltas that never split a stop string.

    Decoding follows the offset scheme of text-generation-inference: decode a short window of
    recent tokens and emit only what it adds, waiting while the tail is an incomplete UTF-8
    character (decoded as U+FFFD). Stop strings are searched in the decoded text, so a stop
    string spread over several tokens is still found; text that might be the start of a stop
    string is held back until it is known not to be. Both checks go through `StopMatcher`, so their
    cost per generated character does not grow with the stop strings' length or number.
    """

    def __init__(
        self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = (), prompt_tail: Sequence[int] = ()
    ) -> None:
        self._decode = decode
        self._stop = StopMatcher([s for s in stop if s])
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
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next token
        self._append(new_text[len(prefix_text) :])
        self._prefix, self._read = self._read, len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: returns whatever is still held back."""
        if not self.stopped and self._read < len(self._ids):
            prefix_text = self._decode(self._ids[self._prefix : self._read])
            tail = self._decode(self._ids[self._prefix :])[len(prefix_text) :]
            self._append(tail.rstrip("\ufffd"))
        return self._release(final=True)

    def _append(self, delta: str) -> None:
        base = len(self.text)
        self.text += delta
        for k, ch in enumerate(delta):
            n = self._stop.feed(ch)
            if n:  # a stop string of n characters ends at this character: cut the text where it starts
                self.text = self.text[: base + k + 1 - n]
                self.stopped = True
                return

    def _release(self, final: bool) -> str:
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held_back()
        delta = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return delta

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        return self._stop.partial


class StopMatcher:
    """Aho-Corasick over the stop strings, fed the text one character at a time.

    ``feed`` returns the length of the longest stop string ending at that character (0: none), and
    ``partial`` is the longest tail of the text fed so far that is a prefix of a stop string. Both cost
    O(1) amortized per character, whatever the stop strings: the naive search re-scanned every stop
    string and every tail at each token (one 900 KB stop string cost ~28 s of CPU per 4,096 tokens).
    Building costs O(total stop length), which the server bounds at validation (MAX_STOP_CHARS).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.next: list[dict[str, int]] = [{}]
        self.depth = [0]
        self.ends = [0]  # the longest stop string ending at this state, following fail links
        for s in stops:
            node = 0
            for ch in s:
                if ch not in self.next[node]:
                    self.next.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.ends.append(0)
                    self.next[node][ch] = len(self.next) - 1
                node = self.next[node][ch]
            self.ends[node] = len(s)
        self.fail = [0] * len(self.next)
        order = list(self.next[0].values())  # breadth first: a node's fail link is set before its children's
        for node in order:
            for ch, child in self.next[node].items():
                f = self.fail[node]
                while f and ch not in self.next[f]:
                    f = self.fail[f]
                self.fail[child] = self.next[f].get(ch, 0) if self.next[f].get(ch) != child else 0
                self.ends[child] = max(self.ends[child], self.ends[self.fail[child]])
                order.append(child)
        self.state = 0

    def feed(self, ch: str) -> int:
        s = self.state
        while s and ch not in self.next[s]:
            s = self.fail[s]
        self.state = self.next[s].get(ch, 0)
        return self.ends[self.state]

    @property
    def partial(self) -> int:
        return self.depth[self.state]
