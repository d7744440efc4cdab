"""The shape of the code holds (issue 16): no import cycle between medtune's modules, none between its parts
(data/, eval/, serve/, stages/, merge/ and the top-level modules), and no module reaches into another module's
underscore names. Code flows downhill: what sits below never imports what sits above it.

Every module of src/medtune is read with `ast`, not imported. Imports inside functions count like those at the
top of a file: a function-level import hides a cycle, it does not remove it. A name bound by `importlib`
(the stage registry in stages/__init__.py loads a stage by name) is not an import edge.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted((SRC / "medtune").rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def absolute(name: str, node: ast.ImportFrom) -> str:
    """The module an ImportFrom names, relative imports resolved against `name`."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package(name) else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class Imports(ast.NodeVisitor):
    """What one module imports from medtune (with the line), and the underscore names it reads from others."""

    def __init__(self, name: str):
        self.name = name
        self.edges: dict[str, int] = {}  # imported medtune module -> first line
        self.bound: dict[str, str] = {}  # local name -> the medtune module it stands for
        self.private: list[tuple[int, str]] = []

    def _edge(self, target: str, line: int) -> None:
        if target not in MODULES:
            return
        # importing a.b.c runs a/__init__ and a/b/__init__ first, unless they run already (the importer's own)
        for mod in [*ancestors(target), target]:
            if mod != self.name and mod not in ancestors(self.name) and mod in MODULES:
                self.edges.setdefault(mod, line)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:  # the `if TYPE_CHECKING:` body never runs
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "medtune" or alias.name.startswith("medtune."):
                self._edge(alias.name, node.lineno)
                if alias.asname:
                    self.bound[alias.asname] = alias.name
                else:  # `import medtune.x.y` binds `medtune`
                    self.bound["medtune"] = "medtune"

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = absolute(self.name, node)
        if source != "medtune" and not source.startswith("medtune."):
            return
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            if sub in MODULES:  # `from medtune.data import formats`: the module formats
                self._edge(sub, node.lineno)
                self.bound[alias.asname or alias.name] = sub
            else:
                self._edge(source, node.lineno)
                if is_private(alias.name) and source != self.name:
                    self.private.append((node.lineno, f"from {source} import {alias.name}"))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        target = self._module_of(node.value)
        if target is not None and target != self.name and is_private(node.attr):
            sub = f"{target}.{node.attr}"
            if sub not in MODULES:
                self.private.append((node.lineno, f"{target}.{node.attr}"))
        self.generic_visit(node)

    def _module_of(self, node: ast.expr) -> str | None:
        """The medtune module an expression such as `formats` or `medtune.data.formats` stands for, if any."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            parent = self._module_of(node.value)
            if parent is not None and f"{parent}.{node.attr}" in MODULES:
                return f"{parent}.{node.attr}"
        return None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def read(name: str) -> Imports:
    visitor = Imports(name)
    visitor.visit(ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name])))
    return visitor


@pytest.fixture(scope="module")
def imports() -> dict[str, Imports]:
    return {name: read(name) for name in MODULES}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every group of two or more modules that import each other, directly or through others (Tarjan's strongly
    connected components), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(groups)


def describe(group: list[str], edges: dict[tuple[str, str], str]) -> str:
    """The imports that tie a group together, one per line."""
    inside = [text for (a, b), text in sorted(edges.items()) if a in group and b in group]
    return f"{', '.join(group)}:\n    " + "\n    ".join(inside)


def test_no_import_cycle_between_medtune_modules(imports):
    graph = {name: v.edges for name, v in imports.items()}
    edges = {(a, b): f"{MODULES[a].relative_to(SRC)}:{line} imports {b}" for a, v in imports.items()
             for b, line in v.edges.items()}
    found = cycles(graph)
    assert not found, "import cycles (module-level and function-level imports both count):\n" + "\n".join(
        describe(g, edges) for g in found)


def unit(name: str) -> str:
    """The part of medtune a module belongs to: its subpackage (medtune.data, medtune.eval, ...) or itself."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or is_package(name) else name


def part_cycles(imports: dict[str, Imports]) -> tuple[list[list[str]], dict[tuple[str, str], str]]:
    """Cycles in the graph of parts (a subpackage, or a top-level module), and the imports behind each edge."""
    graph: dict[str, dict[str, int]] = {}
    lines: dict[tuple[str, str], dict[str, list[str]]] = {}
    for name, v in sorted(imports.items()):
        graph.setdefault(unit(name), {})
        for target, line in v.edges.items():
            a, b = unit(name), unit(target)
            if a != b and b != "medtune":  # the root package holds constants and resolve_path, and imports nothing
                graph[a].setdefault(b, line)
                lines.setdefault((a, b), {}).setdefault(f"{MODULES[name].relative_to(SRC)}:{line}", []).append(target)
    edges = {pair: "; ".join(f"{at} imports {max(targets, key=len)}" for at, targets in found.items())
             for pair, found in lines.items()}  # one import statement names its module, not the packages above
    return cycles(graph), edges


def test_no_import_cycle_between_medtune_packages(imports):
    """Code flows downhill between the parts too: data/ never imports models while models imports data/,
    eval/ never imports stages/ while stages/ imports eval/."""
    found, edges = part_cycles(imports)
    assert not found, "import cycles between parts of medtune:\n" + "\n".join(describe(g, edges) for g in found)


def test_no_module_imports_another_modules_underscore_names(imports):
    found = [f"{MODULES[name].relative_to(SRC)}:{line}: {what}"
             for name, v in imports.items() for line, what in v.private]
    assert not found, "underscore names used across modules (make them public where they are defined):\n" + \
        "\n".join(found)


# the checker itself, on small sources: each rule can fail


def check_source(tmp_path, monkeypatch, files: dict[str, str]):
    """(cycles, private uses) of a made-up package tree `files` {relative path: source}."""
    root = tmp_path / "src"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "SRC", root)
    monkeypatch.setattr(sys.modules[__name__], "MODULES",
                        {module_name(p): p for p in sorted((root / "medtune").rglob("*.py"))})
    found = {name: read(name) for name in MODULES}
    return cycles({n: v.edges for n, v in found.items()}), part_cycles(found)[0], \
        [w for v in found.values() for _, w in v.private]


def test_the_checker_finds_hidden_cycles_and_private_names(tmp_path, monkeypatch):
    found, parts, private = check_source(tmp_path, monkeypatch, {
        "medtune/__init__.py": "",
        "medtune/a.py": "from medtune import b\n_X = 1\n",
        "medtune/b.py": "def f():\n    from medtune.a import _X\n    return _X\n",
        "medtune/c.py": "from medtune import a\nprint(a._X, a.__doc__)\n",
        "medtune/pkg/__init__.py": "import importlib\nimportlib.import_module('medtune.pkg.d')\n",
        "medtune/pkg/d.py": "from medtune.pkg import e\nfrom . import e as e2\n",
        "medtune/pkg/e.py": "import medtune.c\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medtune.pkg import d\n",
        "medtune/pkg/f.py": "def g():\n    import medtune.g\n",  # pkg -> g -> pkg: no module cycle, a part cycle
        "medtune/g.py": "from medtune.pkg.e import thing\n",
    })
    assert found == [["medtune.a", "medtune.b"]]  # not pkg (importlib), not e -> d (TYPE_CHECKING)
    assert parts == [["medtune.a", "medtune.b"], ["medtune.g", "medtune.pkg"]]
    assert sorted(private) == ["from medtune.a import _X", "medtune.a._X"]
