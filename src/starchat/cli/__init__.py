"""The `starchat` console script: parses arguments and calls plain functions, nothing more.

Each stage owns one module here with ``register(subparsers)``; a stage whose issue has not
landed yet registers a placeholder that says so and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module under starchat.cli, help line). A module that does not exist yet means
# the stage has not landed.
STAGES = [
    ("data", "data", "prepare dialogue data: read, filter, split, tokenize and pack"),
    ("train", "train", "fine-tune a model on dialogues (1 CPU to N GPUs)"),
    ("chat", "chat", "chat with a model in the terminal"),
    ("serve", "serve", "serve a model over an OpenAI-compatible API with a web playground"),
    ("eval", "eval", "evaluate a model: HumanEval in a sandbox, validation loss"),
    ("export", "export", "export a model: merge LoRA adapters, convert to GGUF"),
    ("editor-config", "editor", "print an editor configuration (Continue, Tabby) for `starchat serve`"),
]


from starchat.errors import StarchatError as CLIError  # noqa: E402  (one error type for library and CLI)


def _placeholder(name: str, help_text: str):
    def register(sub):
        p = sub.add_parser(name, help=help_text + " (not available yet)", description=help_text)
        p.set_defaults(func=lambda args: _not_yet(name))
    return register


def _not_yet(name: str) -> int:
    print(f"starchat {name}: this command has not landed yet; see the project's open issues.", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="starchat", description="Turn a code language model into a coding assistant: "
        "prepare data, fine-tune, chat, serve and evaluate.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_text in STAGES:
        try:
            mod = importlib.import_module(f"starchat.cli.{module}")
            register = mod.register
        except ModuleNotFoundError as e:
            if e.name != f"starchat.cli.{module}":
                raise
            register = _placeholder(name, help_text)
        register(sub)
    return parser


def _version() -> str:
    from starchat import __version__

    return f"starchat {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from starchat import threads

        threads.apply(getattr(args, "threads", None))  # before any command loads torch or llama.cpp
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"starchat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
