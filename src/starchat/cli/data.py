"""`starchat data`: build training sets from conversation data (argument parsing only)."""

from __future__ import annotations

from starchat.cli.endpoint_options import add_endpoint_options, endpoint_kwargs
from starchat.data import formats
from starchat.data.build import BuildConfig
from starchat.options import add_arguments, from_args


def _flags() -> dict[str, dict]:
    """Per-field argparse extras beyond the fields' own: the formats' choices and help come from their registry
    (read at each parse, so a format registered at run time is offered too)."""
    return {
        "format": dict(
            choices=formats.choices(),
            help="input format per --kind (" + formats.cli_help() + "); auto: told from each file's first record",
        ),
        "kind": dict(choices=list(formats.KINDS)),
    }


def register(sub) -> None:
    p = sub.add_parser(
        "data",
        help="prepare training data: build (read, filter, split, tokenize, pack), pairs "
        "(preference pairs from a model's replies), from-code (dialogues from code)",
        description="Prepare dialogue data for training.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    b = dsub.add_parser("build", help="read conversation data into train/test splits with statistics")
    add_arguments(b, BuildConfig, extra=_flags())  # one flag per BuildConfig field: its default, its help
    b.set_defaults(func=_build)
    _register_pairs(dsub)
    from starchat.data.from_code import register_from_code

    register_from_code(dsub)


def _build(args) -> int:
    from starchat.data.build import build
    from starchat.data.report import print_stats

    return _run(args, BuildConfig, build, print_stats)


def _run(args, cls, fn, print_stats) -> int:
    cfg = from_args(cls, args)
    stats = fn(cfg)
    print_stats(stats)
    print(
        f"wrote {cfg.output} (train {stats['splits']['train']}, test {stats['splits']['test']}) and {cfg.output}/stats.json"
    )
    return 0


def _register_pairs(dsub) -> None:
    from starchat.inference import backends
    from starchat.pairs.mine import PairsConfig

    p = dsub.add_parser(
        "pairs", help="preference pairs from the model's own replies: sample k, test and review, best vs worst"
    )
    # --backend as in every command: its names and help from the backend registry
    add_arguments(p, PairsConfig, extra={"backend": dict(choices=backends.choices(), help=backends.cli_help())})
    add_endpoint_options(p, concurrency=True)  # as every command that takes an endpoint as --model
    p.set_defaults(func=_pairs)


def _pairs(args) -> int:
    from starchat.data.report import print_pairs_stats
    from starchat.pairs.mine import PairsConfig, build_pairs

    engine_kwargs = endpoint_kwargs(args)
    return _run(args, PairsConfig, lambda cfg: build_pairs(cfg, engine_kwargs=engine_kwargs), print_pairs_stats)
