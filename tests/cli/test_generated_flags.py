"""Options generated from the config dataclasses: one flag per field, the field's default, back into the config."""

from __future__ import annotations

import dataclasses

from starchat.cli import build_parser
from starchat.cli.serve import settings_from_args
from starchat.data.build import BuildConfig
from starchat.data.from_code import FromCodeOptions
from starchat.options import from_args
from starchat.server.settings import ServerSettings


def test_serve_without_options_gives_the_default_settings(monkeypatch):
    monkeypatch.delenv("STARCHAT_API_KEY", raising=False)
    assert settings_from_args(build_parser().parse_args(["serve"])) == ServerSettings()


def test_every_server_setting_is_a_serve_option():
    args = build_parser().parse_args(
        [
            "serve",
            "--keep-alive-timeout",
            "2.5",
            "--retry-after",
            "7",
            "--max-connections",
            "9",
            "--default-max-tokens",
            "33",
            "--port",
            "8123",
        ]
    )
    s = settings_from_args(args)
    assert (s.keep_alive_s, s.retry_after_s, s.max_connections, s.default_max_tokens, s.port) == (2.5, 7, 9, 33, 8123)


def test_the_api_key_comes_from_the_environment_but_never_into_help(monkeypatch):
    monkeypatch.setenv("STARCHAT_API_KEY", "s3cret-key")
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    assert "s3cret-key" not in serve.format_help()
    assert settings_from_args(parser.parse_args(["serve"])).api_key == "s3cret-key"
    assert settings_from_args(parser.parse_args(["serve", "--api-key", "other"])).api_key == "other"


def test_data_build_defaults_are_the_dataclass_defaults():
    args = build_parser().parse_args(["data", "build", "--input", "a.jsonl", "--input", "b@2", "--output", "out"])
    assert from_args(BuildConfig, args) == BuildConfig(inputs=["a.jsonl", "b@2"], output="out")
    args = build_parser().parse_args(["data", "build", "--input", "a", "--output", "o", "--no-dedup", "--pack"])
    cfg = from_args(BuildConfig, args)
    assert (cfg.dedup, cfg.pack) == (False, True)


def test_every_from_code_option_is_a_flag():
    """Flags, defaults and types of `data from-code` come from FromCodeOptions, and parse back into it."""
    args = build_parser().parse_args(
        ["data", "from-code", "--output", "o", "--min-doc-chars", "5", "--include-methods"]
    )
    opts = from_args(FromCodeOptions, args)
    assert opts == dataclasses.replace(FromCodeOptions(), min_doc_chars=5, include_methods=True)
