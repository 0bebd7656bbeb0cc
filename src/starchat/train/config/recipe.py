"""Reading a recipe: one YAML layer, then `--section.key value` overrides, each value coerced to its field's type."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from starchat.options import default_of, field_help, type_name
from starchat.train.config.schema import SECTIONS, TOP_LEVEL, ConfigError, TrainConfig


def _leaf_fields(cls, prefix: str):
    """(key, field, type) of every leaf field of a section, nested sections (data.fim) flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name], f"{prefix}.{f.name}")
        else:
            yield f"{prefix}.{f.name}", f, hints[f.name]


def all_keys() -> list[str]:
    """Every valid `section.key` (and the top-level keys)."""
    return [*TOP_LEVEL, *(k for s, c in SECTIONS.items() for k, _, _ in _leaf_fields(c, s))]


def field_docs() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every field, for `--help`."""
    top = {f.name: f for f in dataclasses.fields(TrainConfig)}
    rows = [(k, _shown_type(top[k], str), top[k].default, field_help(top[k])) for k in TOP_LEVEL]
    for s, c in SECTIONS.items():
        for key, f, tp in _leaf_fields(c, s):
            rows.append((key, _shown_type(f, tp), default_of(f), field_help(f)))
    return rows


def _shown_type(f: dataclasses.Field, tp) -> str:
    """`{a,b,c}` for a field with choices (as argparse shows them), else its type."""
    choices = f.metadata.get("choices")
    return "{" + ",".join(choices) + "}" if choices else type_name(tp)


def _unknown(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys() + list(SECTIONS), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "; run `starchat train --help` for the valid keys"
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def _coerce(value: Any, tp, key: str, where: str) -> Any:
    """Convert a YAML or command-line value to the field's type; strings like 'false' become False."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: {key}: bad value {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return [_coerce(v, inner, key, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}") from None
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # YAML's .inf/.nan, or "inf" on the command line: NaN weights later
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        return str(value)
    return value


def _set(cfg: TrainConfig, key: str, value: Any, where: str) -> None:
    if key in TOP_LEVEL:
        setattr(cfg, key, _coerce(value, str, key, where))
        return
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise _unknown(key, where)
    obj = getattr(cfg, section)
    *path, name = name.split(".")
    for part in path:  # a nested section: data.fim.rate
        sub = getattr(obj, part, None) if part in typing.get_type_hints(type(obj)) else None
        if not dataclasses.is_dataclass(sub):
            raise _unknown(key, where)
        obj = sub
    hints = typing.get_type_hints(type(obj))
    if name not in hints:
        raise _unknown(key, where)
    if dataclasses.is_dataclass(hints[name]):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} is a section: a mapping of its keys to values (e.g. {key}.source)")
        for k, v in value.items():
            _set(cfg, f"{key}.{k}", v, where)
        return
    setattr(obj, name, _coerce(value, hints[name], key, where))


def load_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | list[str] | None = None, validate: bool = True
) -> TrainConfig:
    """Read a recipe YAML, apply `section.key` overrides (a dict or `--section.key value` argv), validate."""
    cfg = TrainConfig()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(_read_recipe_text(path)) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such recipe file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a recipe file") from None
        except yaml.reader.ReaderError as e:  # a control character: binary data, not a recipe
            raise ConfigError(
                f"{path}: not a text file (character {e.character!r} at byte {e.position}); pass a YAML recipe"
            ) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark else ""
            raise ConfigError(f"{path}: {line}not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections {list(SECTIONS)}")
        for section, body in data.items():
            if section in TOP_LEVEL:
                _set(cfg, section, body, str(path))
                continue
            if section not in SECTIONS:
                raise _unknown(str(section), str(path))
            if not isinstance(body, dict):
                raise ConfigError(f"{path}: section '{section}' must be a mapping of keys to values")
            for k, v in body.items():
                _set(cfg, f"{section}.{k}", v, str(path))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for k, v in (overrides or {}).items():
        _set(cfg, k, v, "command line")
    if validate:
        from starchat.train.config.validate import validate_config

        validate_config(cfg, str(path) if path else "config")
    return cfg


MAX_RECIPE_BYTES = 1 << 20


def _read_recipe_text(path: Path) -> str:
    """The recipe's text, read with a size cap (a recipe is never megabytes; /dev/zero never ends)."""
    with path.open("rb") as f:
        raw = f.read(MAX_RECIPE_BYTES + 1)
    if len(raw) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_RECIPE_BYTES >> 20} MiB; not a recipe file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); pass a YAML recipe") from None


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--a.b 1 --c.d=x --flag` -> {'a.b': '1', 'c.d': 'x', 'flag': 'true'} (a bare flag means true)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise ConfigError(f"command line: expected --section.key VALUE, got {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 1
        else:
            value = "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


def dump_config(cfg: TrainConfig) -> str:
    """The config as YAML (saved as training_config.yaml beside the model)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
