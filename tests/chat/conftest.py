"""Fixtures for the chat tests: one engine on the tiny model, shared by the session tests."""

import pytest


@pytest.fixture(scope="session")
def chat_engine(tiny_model_dir):
    from starchat.inference import load_engine

    return load_engine(str(tiny_model_dir))
