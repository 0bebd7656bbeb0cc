"""Training methods as a registry: each `method:` of a recipe names a module here with its builder and section.

Adding a method is one new module under starchat/train/methods/ that defines `METHOD = Method(...)`, plus
its line in REGISTRY below; `starchat train`, the recipe format and the config help pick it up from there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starchat.dotted import resolve

REGISTRY = (
    "starchat.train.methods.sft",
    "starchat.train.methods.dpo",
)
"""The method modules, in the order `--help` lists them."""


@dataclass(frozen=True)
class Method:
    """One training method: what `method: NAME` in a recipe runs."""

    name: str
    help: str
    """One line for `starchat train --help`."""
    build: Callable[..., tuple] | str
    """(cfg, run_dir, resume, callbacks) -> (trainer, tokenizer, data_stats, resume), or its ``module:function``
    path: a builder imports the training stack (data, model, Trainer), which imports the config, which imports
    this registry, so the registry names it and imports it only when a run starts (import-linter checks that)."""
    section: str | None = None
    """The recipe section holding this method's own keys (e.g. 'dpo'), or None."""
    section_class: type | None = None
    """The dataclass of that section (its fields documented with starchat.options.setting)."""
    validate: Callable[[Any, str], None] | None = None
    """(cfg, where) -> None: raise ConfigError for settings that only fail later with this method."""
    length_key: str = "data.max_length"
    """The `section.key` of the longest training sequence, checked against the model's context."""

    def builder(self) -> Callable[..., tuple]:
        if callable(self.build):
            return self.build
        return resolve(self.build)


def _load() -> dict[str, Method]:
    methods = {}
    for module in REGISTRY:
        method = importlib.import_module(module).METHOD
        methods[method.name] = method
    return methods


METHODS: dict[str, Method] = _load()


def get_method(name: str) -> Method:
    """The registered method `name` (load_config has checked it is one)."""
    return METHODS[name]
