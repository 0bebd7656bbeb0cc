"""Load the training dialogues, check them, then tokenize (assistant-only labels) and pack them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.fsio import file_lock
from starchat.train.config import DataConfig

logger = logging.getLogger(__name__)


class DataError(StarchatError):
    """Training data that cannot be used as configured."""


@dataclass
class PreparedData:
    train: Any
    eval: Any | None
    stats: dict


def ensure_dataset(cfg: DataConfig) -> bool:
    """Build data.dataset with `starchat data from-code` when it does not exist yet; True when this call built it.

    Every rank of a distributed run gets here at once: the lock lets one build while the others wait
    and then load what it wrote (without it, each rank built and swapped the folder under the others).
    """
    if not cfg.from_code:
        return False
    from starchat.data.from_code import build_from_code, options_from_mapping

    opts = options_from_mapping(cfg.from_code_options)  # checked even when the dataset exists: a typo fails now
    path = Path(cfg.dataset)
    with file_lock(path.with_name(f".{path.name}.lock")):
        if path.exists():
            return False
        logger.info("building %s from the functions of %s", cfg.dataset, cfg.from_code)
        out = build_from_code(cfg.from_code, path, opts)
        logger.info("%s", _built_line(out))
        return True


def _built_line(out: Path) -> str:
    import json

    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    return f"{stats['train']} train + {stats['test']} test dialogues written to {out} (dropped: {stats['dropped']})"


def load_raw(cfg: DataConfig):
    """The dataset as a DatasetDict: a `save_to_disk` dir, a JSON/JSONL file, or a hub ID."""
    import datasets

    src = cfg.dataset
    path = Path(src)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix in (".json", ".jsonl"):
            ds = datasets.load_dataset("json", data_files=str(path))
        elif path.exists():
            raise DataError(
                f"data.dataset: {src} is neither a `starchat data build` directory nor a .json/.jsonl "
                "file; run `starchat data build --input ... --output DIR` and point data.dataset at DIR"
            )
        else:
            ds = datasets.load_dataset(src, cfg.dataset_config)
    except DataError:
        raise
    except (FileNotFoundError, ConnectionError, ValueError) as e:
        raise DataError(f"data.dataset: cannot load {src!r}: {str(e).splitlines()[0][:300]}") from None
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({cfg.train_split: ds})
    return ds


def _check_split(ds, split: str, cfg: DataConfig, key: str):
    if split not in ds:
        raise DataError(f"data.{key}: {cfg.dataset} has no split {split!r} (it has {sorted(ds)})")
    d = ds[split]
    if cfg.messages_column not in d.column_names:
        raise DataError(
            f"data.messages_column: split {split!r} of {cfg.dataset} has no column "
            f"{cfg.messages_column!r} (columns: {d.column_names}); convert it with `starchat data build`"
        )
    if len(d) == 0:
        raise DataError(f"data.dataset: split {split!r} of {cfg.dataset} is empty")
    first = d[0][cfg.messages_column]
    ok = isinstance(first, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in first)
    if not ok:
        raise DataError(
            f"data.messages_column: {cfg.dataset}[{split}][0].{cfg.messages_column} is not a list of "
            f"{{role, content}} messages (got {str(first)[:120]!r}); convert it with `starchat data build`"
        )
    return d


def prepare_data(cfg: DataConfig, tokenizer, template: str = "starchat", fim_spec=None) -> PreparedData:
    """Tokenize (labels on assistant replies + <|end|> only), mix in the FIM rows of data.fim (training split,
    with ``fim_spec``), and optionally pack both splits."""
    from starchat.data.pack import pack_dataset
    from starchat.data.tokenize import tokenize_dataset

    raw = load_raw(cfg)
    train = _check_split(raw, cfg.train_split, cfg, "train_split")
    evals = _check_split(raw, cfg.test_split, cfg, "test_split") if cfg.test_split else None
    # What the splits held before max_*_samples: the console says how much of it a run leaves out.
    stats: dict = {"train_read": len(train), **({"eval_read": len(evals)} if evals is not None else {})}
    if cfg.max_train_samples:
        train = train.select(range(min(cfg.max_train_samples, len(train))))
    if evals is not None and cfg.max_eval_samples:
        evals = evals.select(range(min(cfg.max_eval_samples, len(evals))))
    out = {}
    for name, d in (("train", train), ("eval", evals)):
        if d is None:
            out[name] = None
            continue
        d = d.rename_column(cfg.messages_column, "messages") if cfg.messages_column != "messages" else d
        tok, tstats = tokenize_dataset(
            d.select_columns(["messages"]), tokenizer, cfg.max_length, template=template, truncation=cfg.truncation
        )
        stats[f"{name}_tokenize"] = tstats
        if len(tok) == 0:
            if not any(m.get("role") == "assistant" and m.get("content") for row in d["messages"] for m in row):
                raise DataError(
                    f"data: no {name} dialogue has an assistant turn (column "
                    f"'{cfg.messages_column}' holds only system/user turns); the model learns from "
                    "assistant replies, so add them"
                )
            raise DataError(
                f"data: no {name} dialogue has assistant tokens left after truncation to "
                f"data.max_length={cfg.max_length}; raise data.max_length or check the data"
            )
        if name == "train":
            stats["train_rows"] = {"dialogue": len(tok)}
            if cfg.fim.enabled and fim_spec is not None:
                tok = mix_fim_rows(tok, cfg, tokenizer, fim_spec, stats)
        if cfg.packing:
            tok, pstats = pack_dataset(tok, cfg.block_size)
            stats[f"{name}_pack"] = pstats
        out[name] = tok
    return PreparedData(out["train"], out["eval"], stats)


def fim_row_count(dialogues: int, cfg: DataConfig) -> int:
    """Rows to take from data.fim.source so that they are data.fim.share of all training rows."""
    f = cfg.fim
    n = round(dialogues * f.share / (1 - f.share))
    return max(1, min(n, f.max_rows)) if f.max_rows is not None else max(1, n)


def mix_fim_rows(tok, cfg: DataConfig, tokenizer, spec, stats: dict):
    """The tokenized dialogues with data.fim's rows appended (the Trainer shuffles, packing sorts by length)."""
    import datasets
    import pyarrow as pa

    from starchat.data.fim import FimStats, collect_documents, fim_rows, rows_for_tokenizer

    f = cfg.fim
    wanted = fim_row_count(len(tok), cfg)
    fstats = FimStats()
    # Some rows turn out longer than max_length: read a margin of documents, keep the first `wanted` that fit.
    docs = collect_documents(
        f.source,
        text_column=f.text_column,
        unit=f.unit,
        seed=f.seed,
        max_chars=f.max_chars,
        limit=2 * wanted + 16,
        stats=fstats,
        load=lambda src: load_raw(DataConfig(dataset=src)),
    )
    ids, encode, bos = rows_for_tokenizer(tokenizer, spec)
    rows = fim_rows(
        docs,
        spec,
        ids,
        encode,
        rate=f.rate,
        spm_rate=f.spm_rate,
        span=f.span,
        bos=bos,
        seed=f.seed,
        max_length=min(cfg.max_length, cfg.block_size) if cfg.packing else cfg.max_length,
        max_rows=wanted,
        stats=fstats,
    )
    if not rows:
        raise DataError(
            f"data.fim.source: no usable document in {f.source!r} ({fstats.documents} documents, "
            f"{fstats.too_long} longer than data.max_length={cfg.max_length} tokens, "
            f"{fstats.humaneval_overlap} overlapping HumanEval); lower data.fim.max_chars or point it "
            "at other code"
        )
    if len(rows) < wanted:
        logger.warning(
            "data.fim: %d rows from %s, fewer than the %d that data.fim.share=%s asks for",
            len(rows),
            f.source,
            wanted,
            f.share,
        )
    lists = pa.list_(pa.int32())
    extra = datasets.Dataset(
        pa.table(
            {
                "input_ids": pa.array([r["input_ids"] for r in rows], lists),
                "labels": pa.array([r["labels"] for r in rows], lists),
                "length": pa.array([r["length"] for r in rows], pa.int32()),
            }
        )
    )
    stats["fim"] = {
        "source": fstats.source,
        "unit": f.unit,
        "documents_read": fstats.documents,
        "rows": fstats.rows,
        "psm": fstats.psm,
        "spm": fstats.spm,
        "code": fstats.code,
        "dropped_too_long": fstats.too_long,
        "dropped_humaneval_overlap": fstats.humaneval_overlap,
        "tokens": fstats.tokens,
        "trained_tokens": fstats.trained_tokens,
    }
    stats["train_rows"].update({"fim_psm": fstats.psm, "fim_spm": fstats.spm, "code": fstats.code})
    return datasets.concatenate_datasets([tok, extra.cast(tok.features)])


def collator(cfg: DataConfig, tokenizer):
    """The batch builder matching the rows: packed rows carry position_ids and no attention_mask."""
    from starchat.data.collate import DataCollatorForDialogues, DataCollatorForPacking

    cls = DataCollatorForPacking if cfg.packing else DataCollatorForDialogues
    return cls(pad_token_id=tokenizer.pad_token_id)
