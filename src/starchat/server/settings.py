"""Server settings: one typed dataclass, filled by `starchat serve` or by tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"  # loopback by default: exposing a model is an explicit choice (--host 0.0.0.0)
    port: int = 8000
    api_key: str | None = None  # when set, every /v1 route needs `Authorization: Bearer <key>`
    model_name: str | None = None  # the id shown in /v1/models; default: the engine's model name
    max_body_bytes: int = 1_000_000  # a long conversation is ~100 kB; anything past 1 MB is a mistake or abuse
    max_tokens_cap: int = 4096  # the most max_tokens a request may ask for
    default_max_tokens: int = 512  # the cards' max_new_tokens, when a request gives none
    max_batch: int = 16  # requests decoded together: batch rows (transformers), slots (llama.cpp), vLLM batch
    kv_tokens: int = 16384  # llama.cpp: KV cells shared by the slots (~0.4 GB f16 for the 135M default)
    max_queue: int = 64  # requests waiting for a slot before we answer 503
    retry_after_s: int = 2  # the Retry-After we send with 503

    def validate(self) -> None:
        from starchat.errors import StarchatError

        for name in ("max_body_bytes", "max_tokens_cap", "default_max_tokens", "max_batch", "kv_tokens"):
            if getattr(self, name) < 1:
                raise StarchatError(f"server setting {name}={getattr(self, name)} must be >= 1")
        if self.max_queue < 0:
            raise StarchatError(f"server setting max_queue={self.max_queue} must be >= 0")
        if not 0 < self.port < 65536:
            raise StarchatError(f"--port {self.port} must be in 1..65535")
