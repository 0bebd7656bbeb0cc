"""Load the engine for `starchat serve` and run the app under uvicorn."""

from __future__ import annotations

from starchat.server.settings import ServerSettings


def build(model: str | None = None, backend: str = "auto", template: str | None = None,
          settings: ServerSettings | None = None, **engine_kw):
    """The app for ``model`` (None: the offline default GGUF), its engine loaded with ``engine_kw``."""
    from starchat.inference import load_engine
    from starchat.server.app import create_app

    settings = settings or ServerSettings()
    settings.validate()
    return create_app(load_engine(model, backend=backend, template=template, **engine_kw), settings)


def serve(model: str | None = None, backend: str = "auto", template: str | None = None,
          settings: ServerSettings | None = None, **engine_kw) -> None:
    import uvicorn

    settings = settings or ServerSettings()
    app = build(model, backend, template, settings, **engine_kw)
    where = f"http://{settings.host}:{settings.port}"
    print(f"starchat: serving {app.state.engine.model_name} at {where}/v1 (playground: {where}/)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
