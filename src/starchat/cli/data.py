"""`starchat data`: build training sets from conversation data (argument parsing only)."""

from __future__ import annotations

import importlib

from starchat.data.build import BuildConfig
from starchat.options import add_arguments, from_args

# The readers' formats (their registry is the data readers' own; listed here until it offers them).
_FORMATS = dict(format=dict(choices=["auto", "oasst", "guanaco", "sharegpt", "messages", "alpaca", "trl", "text",
                                     "hh"]))


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare training data: build (read, filter, split, tokenize, pack), pairs "
                                    "(preference pairs from a model's replies), from-code (dialogues from code)",
                       description="Prepare dialogue data for training.")
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    b = dsub.add_parser("build", help="read conversation data into train/test splits with statistics")
    add_arguments(b, BuildConfig, extra=_FORMATS)  # one flag per BuildConfig field: its default, its help
    b.set_defaults(func=_build)
    _register_pairs(dsub)
    try:  # `data from-code` belongs to the training stage; present once that stage has landed
        importlib.import_module("starchat.data.from_code").register_from_code(dsub)
    except ModuleNotFoundError as e:
        if e.name != "starchat.data.from_code":
            raise


def _build(args) -> int:
    from starchat.data.build import build
    from starchat.data.report import print_stats

    return _run(args, BuildConfig, build, print_stats)


def _run(args, cls, fn, print_stats) -> int:
    cfg = from_args(cls, args)
    stats = fn(cfg)
    print_stats(stats)
    print(f"wrote {cfg.output} (train {stats['splits']['train']}, test {stats['splits']['test']}) and {cfg.output}/stats.json")
    return 0


def _register_pairs(dsub) -> None:
    from starchat.data.pairs import PairsConfig

    p = dsub.add_parser("pairs", help="preference pairs from the model's own replies: sample k, test and review, best vs worst")
    add_arguments(p, PairsConfig)
    p.set_defaults(func=_pairs)


def _pairs(args) -> int:
    from starchat.data.pairs import PairsConfig, build_pairs
    from starchat.data.report import print_pairs_stats

    return _run(args, PairsConfig, build_pairs, print_pairs_stats)
