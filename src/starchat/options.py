"""The one config convention: fields documented with `setting(default, help)`, CLI flags generated from them.

A config dataclass documents each field once, in its metadata::

    @dataclass
    class PairsConfig:
        k: int = setting(4, "Replies sampled per prompt (at least 2).", flag="-k")

`add_arguments(parser, PairsConfig)` turns every field into an option (type, default, choices and help come
from the field; booleans become --x/--no-x), and `from_args(PairsConfig, args)` builds the config back, so a
default lives in the dataclass only. `HelpFormatter` shows each option's default in `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any

from starchat.errors import StarchatError

MISSING = dataclasses.MISSING


class ConfigError(StarchatError):
    """A recipe or override that does not fit the configuration schema."""


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    choices=None,
    flag: str | None = None,
    metavar: str | None = None,
    cli: bool = True,
    factory=None,
) -> Any:
    """A dataclass field documented in its metadata: `help` (what it does), optional `choices` (checked by
    the CLI and by config validation), `flag` (its CLI spelling when not --field-name), `cli=False` (no flag),
    `factory` (builds the default, e.g. a nested dataclass). No default and no factory: a required field."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if flag:
        meta["flag"] = flag
    if metavar:
        meta["metavar"] = metavar
    if not cli:
        meta["cli"] = False
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):  # a fresh copy per instance, as dataclasses require
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def default_of(f: dataclasses.Field) -> Any:
    """The field's default (a fresh one for factories), or MISSING for a required field."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def field_choices(cls) -> dict[str, tuple]:
    """{field name: allowed values} of the fields that declare `choices`."""
    return {f.name: f.metadata["choices"] for f in dataclasses.fields(cls) if "choices" in f.metadata}


def type_name(tp) -> str:
    """`int | None` for the help of a field annotated `int | None`."""
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _base_type(tp) -> tuple[Any, bool]:
    """(scalar type, is a list) of an annotation: `int | None` -> (int, False), `list[str]` -> (str, True)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    if typing.get_origin(tp) in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_arguments(parser, cls, *, skip=(), extra: dict[str, dict] | None = None) -> None:
    """One option per field of the dataclass `cls` (except `skip` and fields with cli=False).

    `extra` adds or replaces argparse keywords per field (e.g. a metavar); defaults come from the field only.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("cli") is False:
            continue
        tp, is_list = _base_type(hints[f.name])
        kw: dict[str, Any] = dict(dest=f.name, help=field_help(f).replace("%", "%%"))  # argparse formats help
        default = default_of(f)
        if default is MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        if tp is bool and not is_list:
            kw["action"] = argparse.BooleanOptionalAction  # --pack / --no-pack: never "False" parsed as True
        elif is_list:
            kw.update(action="append", type=tp)  # repeat the option for several values
        else:
            kw["type"] = tp if tp in (int, float) else str
        kw.update((extra or {}).get(f.name, {}))
        if "metavar" not in kw and "choices" not in kw and kw.get("action") is not argparse.BooleanOptionalAction:
            kw["metavar"] = flag_of(f).lstrip("-").replace("-", "_").upper()  # named as the flag, not the field
        parser.add_argument(flag_of(f), **kw)


def from_args(cls, args: argparse.Namespace, **values) -> Any:
    """An instance of `cls` from the parsed options `add_arguments` made (fields without one keep their
    default), with `values` on top."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {n: getattr(args, n) for n in names if hasattr(args, n)}
    kw.update(values)
    return cls(**kw)


def _shown(value: Any) -> str:
    if value is None or value == [] or value == ():
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


_SAYS_DEFAULT = re.compile(r"\(default\b|\bdefault:|\bdefault is\b", re.I)  # the help explains its default


class HelpFormatter(argparse.HelpFormatter):
    """Every optional option's help ends with its default, unless the help already says what the default
    is; --x/--no-x pairs name the form that is the default; required options and plain store_true flags get
    none (a "(default: None)" there would be wrong)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if (
            isinstance(action, argparse.BooleanOptionalAction)
            and isinstance(action.default, bool)
            and not _SAYS_DEFAULT.search(help_text)
            and "%(default)" not in help_text
        ):
            on, off = action.option_strings[:2]  # --dedup, --no-dedup: the default is the form that is on
            return f"{help_text} (default: {on if action.default else off})".lstrip()
        if (
            "%(default)" in help_text
            or _SAYS_DEFAULT.search(help_text)
            or not action.option_strings
            or action.required
            or action.nargs == 0
            or action.default is argparse.SUPPRESS
        ):
            return help_text
        return f"{help_text} (default: {_shown(action.default).replace('%', '%%')})".lstrip()


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter keeping the description and epilog as written (for long generated key lists)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults (HelpFormatter) unless told otherwise; its subparsers
    are Parsers too, so every command's help follows the same rules."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
