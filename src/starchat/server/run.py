"""Load the engine(s) for `starchat serve` and run the app under uvicorn."""

from __future__ import annotations

import os

from starchat.errors import StarchatError
from starchat.server.settings import ServerSettings



def build(model: str | None = None, backend: str = "auto", template: str | None = None,
          settings: ServerSettings | None = None, **engine_kw):
    """The app for ``model``: one engine, plus one more per extra llama.cpp slot."""
    from starchat.inference import load_engine, resolve_backend
    from starchat.inference.loader import default_model_path
    from starchat.server.app import create_app, make_scheduler

    settings = settings or ServerSettings()
    settings.validate()
    kind = resolve_backend(model or default_model_path(), backend)
    if settings.slots > 1 and kind != "llamacpp":
        raise StarchatError(f"--slots applies to the llama.cpp backend; the {kind} backend batches requests "
                            "itself (use --max-batch)")
    if kind == "llamacpp" and settings.slots > 1:
        # Each slot owns a llama.cpp context; the cores are shared out between them.
        engine_kw.setdefault("n_threads", max(1, (os.cpu_count() or 1) // settings.slots))
    engine = load_engine(model, backend=kind, template=template, **engine_kw)
    extra = [load_engine(model, backend=kind, template=template, **engine_kw) for _ in range(settings.slots - 1)]
    return create_app(engine, settings, scheduler=make_scheduler(engine, settings, extra))


def serve(model: str | None = None, backend: str = "auto", template: str | None = None,
          settings: ServerSettings | None = None, **engine_kw) -> None:
    import uvicorn

    settings = settings or ServerSettings()
    app = build(model, backend, template, settings, **engine_kw)
    where = f"http://{settings.host}:{settings.port}"
    print(f"starchat: serving {app.state.engine.model_name} at {where}/v1 (playground: {where}/)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
