"""The names a server answers to (its served name and aliases); a request for any other model is refused."""

from __future__ import annotations

import os


def served_names(served: str, engine, aliases=()) -> frozenset[str]:
    """``served`` (the id /v1/models lists), the engine's own name, the model path it was loaded from (as given,
    its basename, and that without ``.gguf``: ``x.gguf`` -> ``x``), a hub ID's name without the owner,
    and ``aliases`` (ServerSettings.model_aliases)."""
    names = {served, engine.model_name}
    for path in (getattr(engine, "model_path", None), engine.model_name, *aliases):
        if not path:
            continue
        path = str(path)
        base = os.path.basename(os.path.normpath(path))
        names.update({path, base, base.removesuffix(".gguf")})
    return frozenset(n for n in names if n)


def unknown_model(requested: str | None, names: frozenset[str], served: str) -> str | None:
    """Why a request for ``requested`` is refused (OpenAI's wording, then what to send); None if it is served
    here. An omitted or empty model is this server's: many clients send none, or the id /v1/models gave."""
    if not requested or requested in names:
        return None
    shown = requested if len(requested) <= 100 else requested[:97] + "..."
    return (
        f"The model `{shown}` does not exist or you do not have access to it. This server serves "
        f"`{served}` (GET /v1/models): send that name, or leave model out"
    )
