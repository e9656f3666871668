"""A static audit of the SQL Forge sends: no statement is built from strings at run time.

Allowed as a statement: a string literal, a module constant (the `*_sql.py` modules hold them, as
literals or f-strings of other literals of theirs), a
`psycopg.sql.SQL(<literal>).format(sql.Identifier(...), ...)` composition, or a parameter of a helper
whose every caller passes one of those. Refused: f-strings, `%` or `+` on strings, `str.format`, and
names bound to any of them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SENDERS = {"execute", "executemany", "copy", "stream"}  # psycopg: the first argument is the statement


@dataclass(frozen=True)
class Finding:
    where: str  # file:line
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def _is_sql_composition(node: ast.AST) -> bool:
    """sql.SQL("...") / sql.SQL("...").format(...) / sql.Identifier(...) / sql.Composed(...)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "format":
            return _is_sql_composition(node.func.value)
        return node.func.attr in ("SQL", "Identifier", "Literal", "Composed", "Placeholder")
    return False


def _dynamic(node: ast.AST) -> str | None:
    """Why `node` builds a string at run time, or None."""
    if isinstance(node, ast.JoinedStr):
        return "f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return "string built with % or +"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
            and not _is_sql_composition(node):
        return "str.format"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
        return "str.join"
    return None


class _Module(ast.NodeVisitor):
    def __init__(self, path: str, tree: ast.Module) -> None:
        self.path, self.findings = path, []
        self.sql_params: dict[str, int] = {}  # helper name -> index of the parameter it sends as SQL
        self._scopes: list[ast.AST] = [tree]

    def _bindings(self, name: str) -> list[ast.AST]:
        values = []
        for scope in self._scopes:
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    values.append(node.value)
                elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name) \
                        and node.target.id == name and node.value is not None:
                    values.append(node.value if isinstance(node, ast.AnnAssign) else node)
        return values

    def _check(self, node: ast.AST, line: int, context: str) -> None:
        if isinstance(node, ast.Constant | ast.Attribute) or _is_sql_composition(node):
            if _is_sql_composition(node):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) \
                            and inner.func.attr == "SQL" and inner.args and _dynamic(inner.args[0]):
                        self.findings.append(Finding(f"{self.path}:{line}", f"sql.SQL() of a {_dynamic(inner.args[0])}"))
            return
        reason = _dynamic(node)
        if isinstance(node, ast.AugAssign):
            reason = "string extended with +="
        if reason:
            self.findings.append(Finding(f"{self.path}:{line}", f"{context}: {reason}: {ast.unparse(node)[:80]}"))
            return
        if isinstance(node, ast.Name):
            function = self._scopes[-1]
            params = [a.arg for a in getattr(getattr(function, "args", None), "args", [])]
            if node.id in params and isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                offset = 1 if params and params[0] in ("self", "cls") else 0
                self.sql_params[function.name] = params.index(node.id) - offset
            for value in self._bindings(node.id):
                self._check(value, line, f"{context} via {node.id}")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scopes.append(node)
        self.generic_visit(node)
        self._scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr in SENDERS and node.args:
            self._check(node.args[0], node.lineno, node.func.attr)
        self.generic_visit(node)


def _callers(tree: ast.Module, path: str, helpers: dict[str, int]) -> list[Finding]:
    """Calls of SQL-sending helpers must pass a literal, a constant or a composition."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name in helpers and len(node.args) > helpers[name] >= 0:
            arg = node.args[helpers[name]]
            if not (isinstance(arg, ast.Constant | ast.Attribute | ast.Name) or _is_sql_composition(arg)):
                found.append(Finding(f"{path}:{node.lineno}", f"{name}() given {ast.unparse(arg)[:80]}"))
            elif _dynamic(arg):
                found.append(Finding(f"{path}:{node.lineno}", f"{name}() given a {_dynamic(arg)}"))
    return found


def _constants(tree: ast.Module, path: str) -> list[Finding]:
    """Module-level statements of a *_sql.py module are literal strings, or f-strings that only splice in
    other literal constants of the module (a column list written once): fixed when the module loads."""
    literal: set[str] = set()
    found = []
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        value = node.value
        fixed = isinstance(value, ast.Constant) or (
            isinstance(value, ast.JoinedStr) and all(
                isinstance(part, ast.Constant) or (isinstance(part, ast.FormattedValue)
                                                   and isinstance(part.value, ast.Name) and part.value.id in literal)
                for part in value.values))
        if fixed:
            literal.update(names)
        else:
            found.append(Finding(f"{path}:{node.lineno}", f"SQL constant is not fixed text: {ast.unparse(value)[:80]}"))
    return found


def audit_sources(sources: dict[str, str]) -> list[Finding]:
    """Findings for {path: source text}."""
    findings, helpers, trees = [], {}, {}
    for path, text in sources.items():
        tree = trees[path] = ast.parse(text)
        module = _Module(path, tree)
        module.visit(tree)
        findings += module.findings
        helpers.update(module.sql_params)
        if path.endswith("_sql.py"):
            findings += _constants(tree, path)
    for path, tree in trees.items():
        findings += _callers(tree, path, helpers)
    return findings


def audit_package(root: Path) -> list[Finding]:
    """Findings for every module under `root`."""
    return audit_sources({str(p.relative_to(root.parent)): p.read_text(encoding="utf-8")
                          for p in sorted(root.rglob("*.py"))})
