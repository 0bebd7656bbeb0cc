"""The options every command that takes ``--model`` shares: ``--backend``, and those of an
``http(s)://HOST[:PORT]/v1`` endpoint."""

from __future__ import annotations

import os
from urllib.parse import urlparse


def add_backend_option(p) -> None:
    """``--backend``: its choices and help come from the backend registry, the same in every command."""
    from starchat.inference import backends

    p.add_argument("--backend", default=backends.AUTO, choices=backends.choices(), help=backends.cli_help())


def add_endpoint_options(p, concurrency: bool = False) -> None:
    """``--served-model``, ``--api-key`` and ``--request-timeout`` (and ``--concurrency`` for batch commands)."""
    g = p.add_argument_group("endpoint (--model http(s)://HOST[:PORT]/v1)")
    g.add_argument("--served-model", default=None, help="model name at the endpoint (default: the first of /v1/models)")
    g.add_argument("--api-key", default=None, help="the endpoint's key (default: $OPENAI_API_KEY)")
    g.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        help="seconds one reply may take as a whole, from connecting to its last byte, streamed or "
        "not (a server that trickles or never ends its stream is cut off then; failed attempts "
        "retried after a 5xx each get their own) (default: %(default)s)",
    )
    if concurrency:
        g.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")


def endpoint_kwargs(args) -> dict:
    """Keywords for ``load_engine`` when ``args.model`` is an endpoint; {} otherwise."""
    from starchat.inference.endpoint import is_endpoint

    if not is_endpoint(args.model):
        for flag in ("served_model", "api_key"):
            if getattr(args, flag, None):
                from starchat.errors import StarchatError

                raise StarchatError(
                    f"--{flag.replace('_', '-')} applies to an endpoint: give --model http(s)://HOST[:PORT]/v1"
                )
        return {}
    kw = {"served_model": args.served_model, "api_key": args.api_key, "timeout": args.request_timeout}
    if getattr(args, "concurrency", None):
        kw["concurrency"] = args.concurrency
    return kw


def endpoint_slug(url: str, served_model: str | None = None) -> str:
    """A directory name for runs against ``url``: host-port[-model]."""
    u = urlparse(url)
    parts = [u.hostname or "endpoint", str(u.port or ("443" if u.scheme == "https" else "80"))]
    return "-".join(parts + ([os.path.basename(served_model)] if served_model else []))
