"""Sampling parameters and the result of one generation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from starchat.errors import StarchatError

SEED_MAX = 2**32 - 1  # llama.cpp takes a uint32 seed; torch takes more, but one range for every backend
MAX_STOP_CHARS = 4096  # all stop strings together: longer ones are a mistake or abuse (each costs every token)


@dataclass
class SamplingParams:
    """How to sample. The defaults are the StarChat model cards' values."""

    temperature: float = 0.2  # 0 means greedy decoding
    top_k: int = 50  # 0 disables top-k
    top_p: float = 0.95
    repetition_penalty: float = 1.2  # 1.0 disables it
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=list)  # extra stop strings, matched on the decoded text
    seed: int | None = None  # same seed + same prompt -> same output

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        checks = [
            ("temperature", self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0 (1 = off)"),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise StarchatError(f"sampling parameter {name}={getattr(self, name)!r} {why}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise StarchatError(f"sampling parameter stop={self.stop!r}: each stop string must be a non-empty string")
        if sum(len(s) for s in self.stop) > MAX_STOP_CHARS:
            raise StarchatError(f"sampling parameter stop: the stop strings total "
                                f"{sum(len(s) for s in self.stop)} characters, more than {MAX_STOP_CHARS}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= SEED_MAX):
            raise StarchatError(f"sampling parameter seed={self.seed!r} must be an integer in 0..{SEED_MAX}")

    def replace(self, **changes) -> "SamplingParams":
        return dataclasses.replace(self, **changes)

    def update_from_string(self, key: str, value: str) -> "SamplingParams":
        """A copy with ``key`` set from its text form (``/params temperature=0.7``, ``stop=a,b``, ``seed=none``)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        if key not in fields:
            raise StarchatError(f"unknown parameter {key!r}; known: {', '.join(fields)}")
        try:
            if key == "stop":
                parsed: object = [s for s in value.split(",") if s]
            elif key == "seed":
                parsed = None if value.lower() in ("none", "") else int(value)
            elif key in ("top_k", "max_new_tokens"):
                parsed = int(value)
            else:
                parsed = float(value)
        except ValueError:
            raise StarchatError(f"parameter {key}={value!r} is not a number") from None
        return self.replace(**{key: parsed})


@dataclass
class Completion:
    """One finished generation."""

    text: str
    token_ids: list[int]  # generated tokens, without the end-of-turn token
    finish_reason: str  # "stop" (end token or stop string), "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int  # tokens the model generated, the end-of-turn token included
