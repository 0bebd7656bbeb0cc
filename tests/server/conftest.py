"""Server test fixtures: the tiny model's transformers engine, and the same model as a GGUF on llama.cpp."""

import pytest


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from starchat.inference import load_engine

    return load_engine(str(tiny_model_dir), backend="transformers")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    """The tiny model exported to an f32 GGUF: llama.cpp slots in a second, with the StarChat tokens."""
    from starchat.export.gguf import export_gguf

    return export_gguf(tiny_model_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf", "f32")


@pytest.fixture(scope="session")
def tiny_llama_engine(tiny_gguf):
    from starchat.inference import load_engine

    return load_engine(str(tiny_gguf), backend="llamacpp", n_threads=1)
