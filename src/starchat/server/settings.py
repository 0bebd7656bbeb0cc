"""Server settings: one typed dataclass, filled by `starchat serve` (its options are generated from it) or by tests."""

from __future__ import annotations

from dataclasses import dataclass

from starchat.options import setting


@dataclass
class ServerSettings:
    """How `starchat serve` listens and what it admits; each field is a `starchat serve` option."""

    host: str = setting(
        "127.0.0.1",
        "Address to listen on: loopback serves this machine only; exposing a "
        "model is an explicit choice (--host 0.0.0.0).",
    )
    port: int = setting(8000, "TCP port to listen on.")
    api_key: str | None = setting(
        None, "Require `Authorization: Bearer KEY` on every /v1 route (default: $STARCHAT_API_KEY, else none)."
    )
    model_name: str | None = setting(None, "The model id shown in /v1/models (default: the model's name).")
    model_aliases: tuple[str, ...] = setting(
        (),
        "Other names requests may give as `model` (build() adds the model path); see server/model_names.py.",
        cli=False,
    )
    max_body_bytes: int = setting(
        1_000_000,
        "Largest request body in bytes: a long conversation is ~100 kB; anything past 1 MB is a mistake or abuse.",
    )
    max_tokens_cap: int = setting(4096, "Largest max_tokens a request may ask for.")
    default_max_tokens: int = setting(512, "max_tokens of a request that gives none (the cards' max_new_tokens).")
    max_batch: int = setting(
        16,
        "Requests decoded together: rows of each forward pass (transformers), parallel "
        "slots of the llama.cpp context, vLLM's batch.",
    )
    kv_tokens: int = setting(
        16384,
        "KV cache positions shared by the running requests (llama.cpp cells, ~0.4 GB "
        "f16 for the 135M default model; transformers: rows x longest row); each request "
        "reserves prompt + max_tokens, the rest wait (memory grows with it).",
    )
    max_queue: int = setting(64, "Requests waiting for a slot before the server answers 503.")
    retry_after_s: int = setting(2, "Seconds in the Retry-After header sent with a 503.", flag="--retry-after")
    header_timeout_s: float = setting(
        10.0,
        "Seconds a client has to send its request line and headers (from "
        "connecting, or from the last reply), else the connection is closed.",
        flag="--header-timeout",
    )
    body_timeout_s: float = setting(
        30.0, "Seconds a client has to send its request body after the headers, else 408.", flag="--body-timeout"
    )
    keep_alive_s: float = setting(
        5.0,
        "Seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive).",
        flag="--keep-alive-timeout",
    )
    max_connections: int = setting(512, "Open connections plus running requests before uvicorn answers 503.")

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
        return (
            f"warning: serving on {self.host or 'every interface'} without --api-key: anyone who can reach "
            "this port can use the model. Set --api-key (or STARCHAT_API_KEY), or serve on 127.0.0.1"
        )

    def validate(self) -> None:
        from starchat.errors import StarchatError

        for name in (
            "max_body_bytes",
            "max_tokens_cap",
            "default_max_tokens",
            "max_batch",
            "kv_tokens",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise StarchatError(f"server setting {name}={getattr(self, name)} must be >= 1")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise StarchatError(f"server setting {name}={getattr(self, name)} must be > 0 seconds")
        if self.max_queue < 0:
            raise StarchatError(f"server setting max_queue={self.max_queue} must be >= 0")
        if not 0 < self.port < 65536:
            raise StarchatError(f"--port {self.port} must be in 1..65535")
