"""The `starchat` console script: parses arguments and calls plain functions, nothing more.

Each stage owns one module here with ``register(subparsers)``.
"""

from __future__ import annotations

import importlib
import sys

from starchat.errors import StarchatError as CLIError  # one error type for library and CLI

# The commands, in --help order: each is the module starchat.cli.NAME with its register(subparsers).
STAGES = ("data", "train", "chat", "serve", "eval", "export", "editor")  # editor: `starchat editor-config`


def build_parser():
    from starchat.options import Parser

    # Parser: every subcommand's help shows its defaults the same way (subparsers take the parent's class).
    parser = Parser(
        prog="starchat",
        description="Turn a code language model into a coding assistant: "
        "prepare data, fine-tune, chat, serve and evaluate.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGES:
        importlib.import_module(f"starchat.cli.{name}").register(sub)
    return parser


def _version() -> str:
    from starchat import __version__

    return f"starchat {__version__}"


def main(argv: list[str] | None = None) -> int:
    from starchat import quiet

    quiet.progress_bars_off_a_terminal()  # before transformers or datasets are imported: they read it then
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet.install()  # before any command imports DeepSpeed, bitsandbytes or transformers
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
