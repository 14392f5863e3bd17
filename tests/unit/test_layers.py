"""Import layers, read from the source with ast (no module is imported or run).

Rules:
* only ``director/net/*``, ``director/trust/zap.py`` and the daemon *drivers* listed in
  ``ZMQ_DRIVERS`` import ``zmq``;
* only ``director/cli/*`` imports ``click``;
* the pure modules (``PURE``: the protocol, manifests, the transfer session, the
  scheduler and the daemon cores ``server/core*.py`` / ``client/core*.py``, globbed, so
  a core is checked as soon as it exists) import nothing that does I/O -- directly,
  or through the director modules they import, followed transitively;
* no import cycle between director's packages (protocol, trust, jobs, transfer, net,
  server, client, cli).

Only module-level imports count (those that run when the module is imported: the
module body, including ``if``/``try`` blocks and class bodies, but not ``if
TYPE_CHECKING:`` blocks).  Imports inside functions are lazy loading: they are not
counted by any rule here, not even for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The modules of server/ and client/ that drive sockets: the only ones there allowed zmq.
ZMQ_DRIVERS = {
    "director/server/daemon.py",
    "director/client/agent.py",
    "director/client/enroll.py",
    "director/client/link.py",
}
ZMQ_ALLOWED_GLOBS = ["director/net/*.py", "director/trust/zap.py"]
CLICK_ALLOWED_GLOBS = ["director/cli/*.py"]
PURE_GLOBS = [
    "director/protocol/*.py",
    "director/transfer/manifest.py",
    "director/transfer/session.py",
    "director/transfer/fetch.py",
    "director/server/fetchgate.py",
    "director/server/scheduler.py",
    "director/server/core*.py",
    "director/server/connections.py",
    "director/client/core*.py",
    "director/client/linkstate.py",
    "director/client/cancelling.py",
    "director/client/outbox.py",
]
IO_MODULES = {"zmq", "sqlite3", "socket", "subprocess", "threading", "selectors",
              "concurrent.futures", "shutil", "click"}
PACKAGES = ["protocol", "trust", "jobs", "transfer", "net", "server", "client", "cli"]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]):
    """Statements that run at import time (not inside functions, not TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            for part in (node.body, node.orelse, node.finalbody,
                         *(h.body for h in node.handlers)):
                yield from _module_level(part)
        elif isinstance(node, (ast.With, ast.For, ast.While, ast.ClassDef)):
            yield from _module_level(node.body)


def _name_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Dotted names a module imports at module level (``from a import b`` gives ``a`` and
    ``a.b``: b may be a module)."""
    name = _name_of(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _module_level(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


class Tree:
    """The director modules under ``root`` and their module-level imports."""

    def __init__(self, root: Path):
        self.root = root
        self.files = {_name_of(p, root): p for p in sorted((root / "director").rglob("*.py"))}
        self.imports = {n: imports_of(p, root) for n, p in self.files.items()}

    def resolve(self, dotted: str) -> list[str]:
        """The director modules that importing ``dotted`` runs (parents' __init__ too)."""
        parts = dotted.split(".")
        return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                if m in self.files]

    def direct(self, module: str) -> set[str]:
        return {m for d in self.imports[module] for m in self.resolve(d) if m != module}

    def io_reached(self, module: str) -> dict[str, list[str]]:
        """Each I/O module reached from ``module`` -> the import chain that reaches it."""
        found: dict[str, list[str]] = {}
        seen = {module}
        todo = [[module]]
        while todo:
            chain = todo.pop(0)
            for dotted in sorted(self.imports[chain[-1]]):
                for io in IO_MODULES:
                    if (dotted == io or dotted.startswith(io + ".")) and io not in found:
                        found[io] = chain + [dotted]
            for nxt in sorted(self.direct(chain[-1]) - seen):
                seen.add(nxt)
                todo.append(chain + [nxt])
        return found

    def package_of(self, module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else None

    def package_edges(self) -> dict[str, dict[str, tuple[str, str]]]:
        """package -> {package it imports: (an importing module, the imported module)}."""
        edges: dict[str, dict[str, tuple[str, str]]] = {p: {} for p in PACKAGES}
        for mod in self.files:
            src = self.package_of(mod)
            for dep in self.direct(mod):
                dst = self.package_of(dep)
                if src and dst and src != dst:
                    edges[src].setdefault(dst, (mod, dep))
        return edges

    def package_cycles(self) -> list[list[str]]:
        edges = self.package_edges()
        cycles, seen = [], set()
        for start in PACKAGES:
            stack = [(start, [start])]
            while stack:
                node, path = stack.pop()
                for nxt in edges[node]:
                    if nxt == start:
                        key = frozenset(path)
                        if key not in seen:
                            seen.add(key)
                            cycles.append(path + [start])
                    elif nxt not in path and nxt > start:  # each cycle once, from its least
                        stack.append((nxt, path + [nxt]))
        return cycles


def _glob(root: Path, patterns: list[str]) -> set[str]:
    return {str(p.relative_to(root)) for g in patterns for p in root.glob(g)}


def zmq_violations(tree: Tree) -> list[str]:
    allowed = _glob(tree.root, ZMQ_ALLOWED_GLOBS) | ZMQ_DRIVERS
    return sorted(f"{tree.files[m].relative_to(tree.root)} imports zmq"
                  for m, imps in tree.imports.items()
                  if any(i == "zmq" or i.startswith("zmq.") for i in imps)
                  and str(tree.files[m].relative_to(tree.root)) not in allowed)


def click_violations(tree: Tree) -> list[str]:
    allowed = _glob(tree.root, CLICK_ALLOWED_GLOBS)
    return sorted(f"{tree.files[m].relative_to(tree.root)} imports click"
                  for m, imps in tree.imports.items()
                  if any(i == "click" or i.startswith("click.") for i in imps)
                  and str(tree.files[m].relative_to(tree.root)) not in allowed)


def pure_violations(tree: Tree) -> list[str]:
    pure = _glob(tree.root, PURE_GLOBS)
    out = []
    for mod, path in tree.files.items():
        if str(path.relative_to(tree.root)) in pure:
            for io, chain in sorted(tree.io_reached(mod).items()):
                out.append(f"{path.relative_to(tree.root)} reaches {io}: {' -> '.join(chain)}")
    return sorted(out)


def cycle_violations(tree: Tree) -> list[str]:
    edges = tree.package_edges()
    return [" -> ".join(c) + "  (" + "; ".join(
        f"{edges[a][b][0]} imports {edges[a][b][1]}" for a, b in zip(c, c[1:])) + ")"
        for c in tree.package_cycles()]


TREE = Tree(ROOT)


def test_only_net_zap_and_daemon_drivers_import_zmq():
    assert zmq_violations(TREE) == []


def test_only_cli_imports_click():
    assert click_violations(TREE) == []


def test_pure_modules_reach_no_io():
    assert pure_violations(TREE) == []


def test_no_import_cycles_between_packages():
    assert cycle_violations(TREE) == []


def test_the_driver_table_names_files_that_exist():
    missing = [d for d in ZMQ_DRIVERS if not (ROOT / d).exists()]
    assert missing == []


# -- the checker itself, on a made-up tree -------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Tree:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return Tree(root)


@pytest.fixture
def fake(tmp_path):
    base = {"director/__init__.py": "", **{f"director/{p}/__init__.py": "" for p in PACKAGES}}
    return lambda files: _write(tmp_path, {**base, **files})


def test_checker_finds_io_reached_through_a_helper(fake):
    tree = fake({"director/server/core_jobs.py": "from director.server import helper\n",
                 "director/server/helper.py": "import os\nimport sqlite3\n",
                 "director/client/core.py": "from . import util\n",
                 "director/client/util.py": "from concurrent.futures import Future\n"})
    found = pure_violations(tree)
    assert any("server/core_jobs.py reaches sqlite3" in f and "helper" in f for f in found)
    assert any("client/core.py reaches concurrent.futures" in f for f in found)


def test_checker_ignores_lazy_and_type_checking_imports(fake):
    tree = fake({"director/server/core.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import zmq\n"
        "def later():\n    import sqlite3\n    import click\n")})
    assert pure_violations(tree) == [] and zmq_violations(tree) == []
    assert click_violations(tree) == []


def test_checker_counts_conditional_and_class_level_imports(fake):
    tree = fake({"director/jobs/a.py": "try:\n    import zmq\nexcept ImportError:\n    pass\n",
                 "director/jobs/b.py": "class X:\n    import click\n"})
    assert zmq_violations(tree) == ["director/jobs/a.py imports zmq"]
    assert click_violations(tree) == ["director/jobs/b.py imports click"]


def test_checker_finds_package_cycles(fake):
    tree = fake({"director/server/x.py": "from director.jobs import y\n",
                 "director/jobs/y.py": "import director.transfer.z\n",
                 "director/transfer/z.py": "from director.server.x import thing\n",
                 "director/cli/m.py": "def f():\n    import director.server.x\n"})
    cycles = tree.package_cycles()
    assert len(cycles) == 1 and set(cycles[0]) == {"server", "jobs", "transfer"}
