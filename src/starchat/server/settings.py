"""Server settings: one typed dataclass, filled by `starchat serve` or by tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"  # loopback by default: exposing a model is an explicit choice (--host 0.0.0.0)
    port: int = 8000
    api_key: str | None = None  # when set, every /v1 route needs `Authorization: Bearer <key>`
    model_name: str | None = None  # the id shown in /v1/models; default: the engine's model name
    # Other names requests may give as `model` (build() adds the model path); see server/model_names.py.
    model_aliases: tuple[str, ...] = ()
    max_body_bytes: int = 1_000_000  # a long conversation is ~100 kB; anything past 1 MB is a mistake or abuse
    max_tokens_cap: int = 4096  # the most max_tokens a request may ask for
    default_max_tokens: int = 512  # the cards' max_new_tokens, when a request gives none
    max_batch: int = 16  # requests decoded together: batch rows (transformers), slots (llama.cpp), vLLM batch
    # KV cache positions the running requests share: llama.cpp's cells (~0.4 GB f16 for the 135M default);
    # transformers: rows x the longest row. Each request reserves prompt + max_tokens; the rest wait.
    kv_tokens: int = 16384
    max_queue: int = 64  # requests waiting for a slot before we answer 503
    retry_after_s: int = 2  # the Retry-After we send with 503
    header_timeout_s: float = 10.0  # request line + headers must be in within this (from connect / last reply)
    body_timeout_s: float = 30.0  # the whole body within this after the headers, else 408
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)
    max_connections: int = 512  # open connections + running requests before uvicorn answers 503

    def exposure_warning(self) -> str | None:
        """A warning when the server listens beyond this machine without an API key."""
        import ipaddress

        if self.api_key is not None:
            return None
        try:
            local = self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name other than localhost: it may resolve to anything
            local = False
        if local:
            return None
        return (f"warning: serving on {self.host or 'every interface'} without --api-key: anyone who can reach "
                "this port can use the model. Set --api-key (or STARCHAT_API_KEY), or serve on 127.0.0.1")

    def validate(self) -> None:
        from starchat.errors import StarchatError

        for name in ("max_body_bytes", "max_tokens_cap", "default_max_tokens", "max_batch", "kv_tokens",
                     "max_connections"):
            if getattr(self, name) < 1:
                raise StarchatError(f"server setting {name}={getattr(self, name)} must be >= 1")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise StarchatError(f"server setting {name}={getattr(self, name)} must be > 0 seconds")
        if self.max_queue < 0:
            raise StarchatError(f"server setting max_queue={self.max_queue} must be >= 0")
        if not 0 < self.port < 65536:
            raise StarchatError(f"--port {self.port} must be in 1..65535")
