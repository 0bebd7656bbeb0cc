"""Load the engine for `starchat serve` and run the app under uvicorn."""

from __future__ import annotations

from dataclasses import replace

from starchat.server.settings import ServerSettings


def build(
    model: str | None = None,
    backend: str = "auto",
    template: str | None = None,
    settings: ServerSettings | None = None,
    **engine_kw,
):
    """The app for ``model`` (None: the offline default GGUF), its engine loaded with ``engine_kw``."""
    from starchat.inference import load_engine
    from starchat.server.app import create_app

    settings = settings or ServerSettings()
    settings.validate()
    if model:  # requests may name the model as it was given here (see server/model_names.py)
        settings = replace(settings, model_aliases=(*settings.model_aliases, model))
    return create_app(load_engine(model, backend=backend, template=template, **engine_kw), settings)


def uvicorn_config(app, settings: ServerSettings, **kw):
    """uvicorn's Config with the server's connection bounds: header/body/keep-alive deadlines, header size
    and connection count (see timeouts.py)."""
    import uvicorn

    from starchat.server.timeouts import MAX_HEADER_BYTES, header_deadline_protocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=header_deadline_protocol(settings.header_timeout_s),
        timeout_keep_alive=settings.keep_alive_s,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=settings.max_connections,
        **kw,
    )


def serve(
    model: str | None = None,
    backend: str = "auto",
    template: str | None = None,
    settings: ServerSettings | None = None,
    **engine_kw,
) -> None:
    import sys

    import uvicorn

    settings = settings or ServerSettings()
    warning = settings.exposure_warning()
    if warning:
        print(f"starchat: {warning}", file=sys.stderr, flush=True)
    app = build(model, backend, template, settings, **engine_kw)
    where = f"http://{settings.host}:{settings.port}"
    print(f"starchat: serving {app.state.engine.model_name} at {where}/v1 (playground: {where}/)", flush=True)
    uvicorn.Server(uvicorn_config(app, settings, log_level="info")).run()
