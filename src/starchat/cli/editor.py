"""`starchat editor-config`: print a Continue or Tabby configuration that points at `starchat serve`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "editor-config",
        help="print an editor configuration (Continue, Tabby) for `starchat serve`",
        description="Print a configuration for Continue (config.yaml) or Tabby (config.toml) that "
        "uses `starchat serve` for chat and fill-in-the-middle autocomplete.",
    )
    p.add_argument("editor", choices=["continue", "tabby"], help="the editor to configure")
    p.add_argument(
        "--url", default="http://127.0.0.1:8000", help="where `starchat serve` listens (default: %(default)s)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="the served model (HF directory or .gguf): its FIM tokens and context go into the config "
        "(default: StarCoder's FIM tokens, a 4096-token context)",
    )
    p.add_argument(
        "--model-name",
        default="starchat",
        help="the model id the editor sends; serve with the same --model-name (default: %(default)s)",
    )
    p.add_argument(
        "--api-key",
        default="none",
        help="the key given to `starchat serve --api-key` (default: %(default)s, for a server without one)",
    )
    p.set_defaults(func=_print)


def _print(args) -> int:
    from starchat.server import editors

    model = editors.read_model(args.model) if args.model else editors.starcoder_default()
    print(editors.render(args.editor, args.url, model, args.model_name, args.api_key), end="")
    return 0
