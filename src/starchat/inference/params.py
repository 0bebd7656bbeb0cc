"""Sampling parameters and the result of one generation."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from starchat.errors import StarchatError

SEED_MAX = 2**32 - 1  # llama.cpp takes a uint32 seed; torch takes more, but one range for every backend
MAX_STOP_CHARS = 4096  # all stop strings together: longer ones are a mistake or abuse (each costs every token)


@dataclass
class SamplingParams:
    """How to sample. The defaults are the StarChat model cards' values, which suit code: low temperature and
    no repetition penalty (code repeats names and lines on purpose; on the default model a penalty of 1.2 left
    a third of coding replies with their code fence open, 1.0 none: bench/code_defaults_bench.py)."""

    temperature: float = 0.2  # 0 means greedy decoding
    top_k: int = 50  # 0 disables top-k
    top_p: float = 0.95
    repetition_penalty: float = 1.0  # 1.0 disables it
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=list)  # extra stop strings, matched on the decoded text
    seed: int | None = None  # same seed + same prompt -> same output
    # Extra token ids that end generation like the end-of-turn token (not part of the text): a FIM middle's ends.
    stop_token_ids: list[int] = field(default_factory=list)

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
            raise StarchatError(
                f"sampling parameter stop: the stop strings total "
                f"{sum(len(s) for s in self.stop)} characters, more than {MAX_STOP_CHARS}"
            )
        if not isinstance(self.stop_token_ids, list) or any(
            isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.stop_token_ids
        ):
            raise StarchatError(f"sampling parameter stop_token_ids={self.stop_token_ids!r}: a list of token ids")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX
        ):
            raise StarchatError(f"sampling parameter seed={self.seed!r} must be an integer in 0..{SEED_MAX}")

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def update_from_string(self, key: str, value: str) -> SamplingParams:
        """A copy with ``key`` set from its text form (``/params temperature=0.7``, ``stop=a,b``, ``seed=none``)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        if key not in fields:
            raise StarchatError(f"unknown parameter {key!r}; known: {', '.join(fields)}")
        try:
            if key == "stop":
                parsed: object = [s for s in value.split(",") if s]
            elif key == "stop_token_ids":
                parsed = [int(s) for s in value.split(",") if s.strip()]
            elif key == "seed":
                parsed = None if value.lower() in ("none", "") else int(value)
            elif key in ("top_k", "max_new_tokens"):
                parsed = int(value)
            else:
                parsed = float(value)
        except ValueError:
            raise StarchatError(f"parameter {key}={value!r} is not a number") from None
        return self.replace(**{key: parsed})


# What transformers' generate() uses for a key a generation_config.json leaves out.
_HF_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
_GGUF_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}


def saved_sampling_defaults(model: str | None, gguf_metadata: dict | None = None) -> dict[str, float | int]:
    """The sampling defaults a model carries, as SamplingParams fields ({} when it carries none).

    * A checkpoint (local folder, or a hub ID in the local cache) whose ``generation_config.json`` sets
      any of do_sample, temperature, top_k, top_p, repetition_penalty or max_new_tokens: the model then
      samples as transformers' ``generate()`` would, so a key it leaves out takes transformers' default
      (no repetition penalty, top_p 1.0, ...), ``do_sample: false`` means greedy (temperature 0); only
      max_new_tokens keeps ours when absent (transformers' default length is 20 tokens).
    * A GGUF model: its ``general.sampling.*`` metadata (temp, top_k, top_p, penalty_repeat), key by key,
      from the metadata llama.cpp read (``gguf_metadata``; gguf's Python reader takes seconds).
    """
    if gguf_metadata is not None:
        out: dict[str, float | int] = {}
        for key, name in _GGUF_KEYS.items():
            try:
                value = float(gguf_metadata[key])
            except (KeyError, TypeError, ValueError):
                continue
            out[name] = int(value) if name == "top_k" else value
        return out
    if not model or model.endswith(".gguf") or os.path.isfile(model):
        return {}
    cfg = _generation_config(model)
    keys = ("do_sample", "max_new_tokens", *_HF_DEFAULTS)
    if not any(k in cfg for k in keys):
        return {}  # only token ids (what save_pretrained writes for every model): no sampling choice made
    out = {k: cfg.get(k, v) for k, v in _HF_DEFAULTS.items()}
    if cfg.get("do_sample") is False:
        out["temperature"] = 0.0
    if isinstance(cfg.get("max_new_tokens"), int):
        out["max_new_tokens"] = cfg["max_new_tokens"]
    return {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _generation_config(model: str) -> dict:
    path = Path(model) / "generation_config.json"
    if not path.is_file():
        if Path(model).exists():
            return {}
        try:  # a hub ID: the file the engine itself reads (from the local cache when offline)
            from transformers import GenerationConfig

            return GenerationConfig.from_pretrained(model).to_diff_dict()
        except Exception:  # noqa: BLE001  (no such model, no network: the engine will say so)
            return {}
    try:
        data = json.loads(path.read_bytes()[: 1 << 20])
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_sampling(model: str | None, gguf_metadata: dict | None = None, **flags) -> SamplingParams:
    """Our defaults, overridden by the model's saved ones, overridden by every flag that is not None."""
    saved = saved_sampling_defaults(model, gguf_metadata)
    return SamplingParams(**{**saved, **{k: v for k, v in flags.items() if v is not None}})


@dataclass
class Completion:
    """One finished generation."""

    text: str
    token_ids: list[int]  # generated tokens, without the end-of-turn token
    finish_reason: str  # "stop" (end token or stop string), "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int  # tokens the model generated, the end-of-turn token included
