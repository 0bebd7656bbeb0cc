"""`starchat data`: build training sets from conversation data (argument parsing only)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from starchat.data import formats
from starchat.data.build import BuildConfig


def _flags() -> dict[str, dict]:
    """Per-field argparse extras; the formats' choices and help come from their registry (read at each
    parse, so a format registered at run time is offered too)."""
    return {
        "format": dict(choices=formats.choices(), help="input format per --kind (" + formats.cli_help()
                       + "); auto: told from each file's first record"),
        "kind": dict(choices=list(formats.KINDS)),
        "truncation": dict(choices=["turns", "cut", "drop"]),
    }


def _field_docs(cls=BuildConfig) -> dict[str, str]:
    """The attribute docstrings of a config dataclass (the line under each field), for --help."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = nxt.value.value
    return docs


def _add_fields(parser, cls, docs: dict[str, str], skip=()) -> None:
    """One --flag per field of the config dataclass ``cls``, with its docstring as help."""
    extras = _flags()
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kw = {"help": docs.get(f.name, ""), "default": f.default, **extras.get(f.name, {})}
        base = str(f.type).split("|")[0].strip()  # "int | None" -> "int" (annotations are strings here)
        if base == "bool":
            kw["action"] = argparse.BooleanOptionalAction  # --pack / --no-pack: never "False" parsed as True
        else:
            kw["type"] = {"int": int, "float": float}.get(base, str)
        parser.add_argument(flag, **kw)


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare dialogue data: read, filter, split, tokenize and pack",
                       description="Prepare dialogue data for training.")
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    b = dsub.add_parser("build", help="read conversation data into train/test splits with statistics",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    docs = _field_docs()
    b.add_argument("--input", dest="inputs", action="append", required=True, metavar="SOURCE[@WEIGHT]",
                   help=docs["inputs"] + " Repeat for several sources.")
    b.add_argument("--output", required=True, help=docs["output"])
    b.add_argument("--decontaminate", action="append", default=[], metavar="BENCHMARK", help=docs["decontaminate"])
    _add_fields(b, BuildConfig, docs, skip=("inputs", "output", "decontaminate"))
    b.set_defaults(func=_build)
    _register_pairs(dsub)
    from starchat.data.from_code import register_from_code

    register_from_code(dsub)


def _build(args) -> int:
    from starchat.data.build import build
    from starchat.data.report import print_stats

    return _run(args, BuildConfig, build, print_stats)


def _run(args, cls, fn, print_stats) -> int:
    cfg = cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
    stats = fn(cfg)
    print_stats(stats)
    print(f"wrote {cfg.output} (train {stats['splits']['train']}, test {stats['splits']['test']}) and {cfg.output}/stats.json")
    return 0


def _register_pairs(dsub) -> None:
    from starchat.pairs.mine import PairsConfig

    p = dsub.add_parser("pairs", help="preference pairs from the model's own replies: sample k, test and review, best vs worst",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    docs = _field_docs(PairsConfig)
    p.add_argument("--model", default=None, help=docs["model"])
    p.add_argument("--prompts", required=True, help=docs["prompts"])
    p.add_argument("--output", required=True, help=docs["output"])
    p.add_argument("-k", type=int, default=4, help=docs["k"])
    _add_fields(p, PairsConfig, docs, skip=("model", "prompts", "output", "k"))
    p.set_defaults(func=_pairs)


def _pairs(args) -> int:
    from starchat.data.report import print_pairs_stats
    from starchat.pairs.mine import PairsConfig, build_pairs

    return _run(args, PairsConfig, build_pairs, print_pairs_stats)
