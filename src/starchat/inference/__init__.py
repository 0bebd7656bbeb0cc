"""One generation engine for chat, the server and eval: transformers, llama.cpp or vLLM underneath.

```python
from starchat.inference import load_engine, SamplingParams
engine = load_engine()                                  # the offline default: SmolLM2-135M-Instruct GGUF
print(engine.generate([{"role": "user", "content": "Hi"}], SamplingParams(seed=0)).text)
```
"""

from starchat.inference.engine import Engine, Generation
from starchat.inference.loader import default_model_path, load_engine, resolve_backend
from starchat.inference.params import Completion, SamplingParams

__all__ = [
    "Completion",
    "Engine",
    "Generation",
    "SamplingParams",
    "default_model_path",
    "load_engine",
    "resolve_backend",
]
