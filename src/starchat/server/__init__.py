"""`starchat serve`: an OpenAI-compatible HTTP server and a web playground over the inference engine.

```python
from starchat.inference import load_engine
from starchat.server import ServerSettings, create_app
app = create_app(load_engine(), ServerSettings(api_key="secret"))  # then: uvicorn.run(app)
```
"""

from starchat.server.settings import ServerSettings

__all__ = ["ServerSettings", "build", "create_app", "make_scheduler", "serve"]
_LAZY = {
    "create_app": "starchat.server.app",
    "make_scheduler": "starchat.server.app",
    "build": "starchat.server.run",
    "serve": "starchat.server.run",
}


def __getattr__(name: str):
    # Imported on first use: `starchat serve --help` builds its options from ServerSettings without FastAPI.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
