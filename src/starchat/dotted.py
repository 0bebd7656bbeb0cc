"""Resolve the "package.module:attr" strings that the registries (backends, evals, methods, problems) name."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(path: str) -> Any:
    """The attribute named by ``"package.module:attr"``, importing its module only now.

    Registries name their entries as strings so that listing them imports no heavy stack (torch, vLLM)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
