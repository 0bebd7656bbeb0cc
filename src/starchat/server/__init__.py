"""`starchat serve`: an OpenAI-compatible HTTP server and a web playground over the inference engine.

```python
from starchat.inference import load_engine
from starchat.server import ServerSettings, create_app
app = create_app(load_engine(), ServerSettings(api_key="secret"))  # then: uvicorn.run(app)
```
"""

from starchat.server.app import create_app, make_scheduler
from starchat.server.run import build, serve
from starchat.server.settings import ServerSettings

__all__ = ["ServerSettings", "build", "create_app", "make_scheduler", "serve"]

