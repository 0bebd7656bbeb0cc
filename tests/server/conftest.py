"""Server test fixtures: the tiny model's transformers engine, shared by the modules."""

import pytest


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from starchat.inference import load_engine

    return load_engine(str(tiny_model_dir), backend="transformers")
