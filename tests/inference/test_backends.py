"""The backend registry is the one list of backends: loading, server scheduling and every CLI read it."""

import sys
import types

import pytest

from starchat.errors import StarchatError
from starchat.inference import backends
from starchat.inference.engine import Engine


class EchoEngine(Engine):
    """A backend that is not built in: each token is a character of the prompt."""

    context_length = 100
    eos_token_ids = [0]

    def __init__(self, model, template=None, **kw):
        super().__init__()
        self.model_name, self.kw = model, kw

    def encode_prompt(self, messages, add_generation_prompt=True):
        return [ord(c) for c in messages[-1]["content"]]

    def encode_text(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def _tokens(self, prompt_ids, params, max_new_tokens):
        yield from prompt_ids[:max_new_tokens]


class EchoScheduler:
    def __init__(self, engine, settings):
        self.engine, self.settings = engine, settings


@pytest.fixture
def echo_backend(monkeypatch):
    """A new backend added the documented way: a module holding the engine, and one registry line."""
    mod = types.ModuleType("echo_backend")
    mod.EchoEngine, mod.EchoScheduler = EchoEngine, EchoScheduler
    monkeypatch.setitem(sys.modules, "echo_backend", mod)
    monkeypatch.setitem(
        backends.BACKENDS,
        "echo",
        backends.Backend(
            "echo", "echo_backend:EchoEngine", "repeats the prompt", scheduler="echo_backend:EchoScheduler"
        ),
    )


def _backend_action(argv_prefix):
    from starchat.cli import build_parser

    parser = build_parser()
    sub = parser
    for name in argv_prefix:  # walk down to the subcommand's parser
        sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    return next(a for a in sub._actions if "--backend" in a.option_strings)


@pytest.mark.parametrize("command", [["chat"], ["serve"], ["eval", "humaneval"]])
def test_every_command_offers_the_registry_backends(command):
    action = _backend_action(command)
    assert list(action.choices) == backends.choices() == ["auto", "transformers", "llamacpp", "vllm"]
    assert action.help == backends.cli_help()
    assert "llama.cpp," not in action.help  # the old eval help listed a spelling no command accepted


def test_a_new_backend_is_one_registry_line(echo_backend, tmp_path):
    from starchat.inference import load_engine
    from starchat.server import ServerSettings, make_scheduler

    model = tmp_path / "m"
    model.mkdir()
    engine = load_engine(str(model), backend="echo", n_ctx=7)
    assert isinstance(engine, EchoEngine) and engine.kw == {"n_ctx": 7}
    settings = ServerSettings()
    scheduler = make_scheduler(engine, settings)
    assert isinstance(scheduler, EchoScheduler) and scheduler.engine is engine
    assert "echo" in _backend_action(["chat"]).choices
    assert "echo: repeats the prompt" in _backend_action(["serve"]).help


def test_an_engine_of_no_backend_runs_one_request_at_a_time():
    from starchat.server import ServerSettings, make_scheduler
    from starchat.server.scheduler import SlotScheduler

    assert isinstance(make_scheduler(EchoEngine("x"), ServerSettings()), SlotScheduler)


def test_an_endpoint_is_not_a_backend_choice():
    with pytest.raises(StarchatError, match="unknown backend 'endpoint'"):
        backends.resolve("model-dir", "endpoint")
    with pytest.raises(StarchatError, match="unknown backend 'llama.cpp': use one of auto, transformers"):
        backends.resolve("model-dir", "llama.cpp")


@pytest.mark.parametrize("name", list(backends.BACKENDS))
def test_every_builtin_entry_names_code_that_exists(name):
    """The registry names its classes by string: a typo would only surface when that backend is used."""
    b = backends.BACKENDS[name]
    assert issubclass(b.engine_class(), Engine)
    assert callable(b.scheduler_factory())
