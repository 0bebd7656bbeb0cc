"""`starchat export`: merge LoRA adapters into a standalone model, or convert a model to GGUF."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a model: merge (LoRA adapters into the base), gguf (convert for llama.cpp)",
        description="Export a trained model for use elsewhere.",
    )
    ex = p.add_subparsers(dest="export_command", metavar="WHAT", required=True)

    m = ex.add_parser("merge", help="merge a LoRA/QLoRA adapter into its base and save a standalone model")
    m.add_argument("adapter_dir", help="directory written by `starchat train` with lora enabled")
    m.add_argument("out_dir", help="where to write the merged model (written atomically)")
    m.add_argument("--base", default=None, help="base model; default: the one recorded in the adapter config")
    m.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    m.set_defaults(func=_merge)

    g = ex.add_parser("gguf", help="convert a transformers model directory to a GGUF file for llama.cpp/ollama")
    g.add_argument("model_dir", help="a transformers checkpoint (GPT-BigCode/StarCoder or Llama architecture)")
    g.add_argument("out", help="the .gguf file to write (written atomically)")
    g.add_argument("--quant", default="f16", choices=["f32", "f16", "q8_0", "q4_k_m"], help="weight type (default f16)")
    g.set_defaults(func=_gguf)


def _merge(args) -> int:
    from starchat.export.merge import merge_lora

    out = merge_lora(args.adapter_dir, args.out_dir, base=args.base, overwrite=args.overwrite)
    print(f"merged model written to {out}")
    return 0


def _gguf(args) -> int:
    from starchat.export.gguf import export_gguf

    out = export_gguf(args.model_dir, args.out, quant=args.quant)
    print(f"GGUF written to {out}")
    return 0
