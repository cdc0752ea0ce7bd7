"""Architecture rules of ``lightning_tts``: layers, no import circles, top-level package imports.

The module import graph is built statically with :mod:`ast` (nothing is imported): every
``import`` statement of every ``.py`` file counts, including function-local imports and imports
under ``if TYPE_CHECKING:``. Only edges between ``lightning_tts`` modules are kept:

* relative imports are resolved against the importing module;
* ``from lightning_tts.x import y`` is an edge to ``lightning_tts.x.y`` when that is a module,
  else to ``lightning_tts.x``; importing a package means its ``__init__``;
* an import of the root package itself (``from lightning_tts import __version__``) and a module
  importing itself or its own parent package are ignored.

The same graph construction is done by the team's ``tools/import_circles.py``. The checks are
plain functions taking the graph, so ``test_checks_detect_planted_faults`` can show on a tiny
hand-made package that each of them detects what it claims.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "lightning_tts"

#: Layer of the root package's own ``__init__.py`` (it has no component under the package).
ROOT_COMPONENT = "__init__"

#: Layers of the package, lowest first. A module belongs to the layer of its first component
#: under ``lightning_tts`` (``lightning_tts.data.cache`` -> ``data``, ``lightning_tts.config`` ->
#: ``config``) and may import only modules of its own layer or of a lower one. A new top-level
#: module or subpackage must be added here deliberately, or ``test_no_upward_import`` fails.
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("errors", "atomic", "devices", "paths", "provenance", "schema"),  # user errors, atomic writes, paths, dataclasses
    1: ("audio", "text"),  # waveforms and features; text front end
    2: ("data", "models"),  # corpora, cache, tasks, datamodule; pure nn.Modules
    3: ("metrics", "plots"),  # metric functions and classes; figures
    4: ("learners",),  # LightningModules, their registry and capabilities
    5: ("evaluation", "embeddings", "adaptation"),  # offline evaluation, embeddings, adapted-voice files
    6: ("callbacks",),  # what to evaluate / draw during training
    7: ("training", "slurm"),  # Trainer assembly; sbatch scripts
    8: ("config",),  # the composed run schema
    9: ("api", "cli", "__main__", "experiment", ROOT_COMPONENT),  # entry points; the multi-stage experiment
}

#: Files (relative to the package directory) allowed function-local imports of package modules,
#: to keep CLI start-up fast. Everywhere else package imports belong at the top of the file.
LAZY_IMPORT_ALLOWED: frozenset[str] = frozenset({"cli.py", "__main__.py", "__init__.py"})


@dataclass(frozen=True)
class ImportEdge:
    """One import statement of one package module that targets another package module.

    Attributes:
        source: Dotted name of the importing module.
        target: Dotted name of the imported module.
        path: File of the importing module.
        line: Line number of the import statement.
        local: Whether the statement sits inside a function or method body.
    """

    source: str
    target: str
    path: Path
    line: int
    local: bool

    def where(self, package_dir: Path) -> str:
        """Return ``package/file.py:line`` relative to the directory above the package."""
        return f"{self.path.relative_to(package_dir.parent).as_posix()}:{self.line}"


@dataclass(frozen=True)
class ImportGraph:
    """Modules of a package and the import edges between them.

    Attributes:
        package_dir: Directory of the package.
        modules: Dotted module name -> file (a package maps to its ``__init__.py``).
        edges: Every in-package import statement, one edge per resolved target.
    """

    package_dir: Path
    modules: dict[str, Path]
    edges: tuple[ImportEdge, ...]

    def __repr__(self) -> str:
        return f"ImportGraph({self.root}: {len(self.modules)} modules, {len(self.edges)} imports)"

    @property
    def root(self) -> str:
        """The root package name."""
        return self.package_dir.name

    def successors(self) -> dict[str, set[str]]:
        """Return module -> set of modules it imports."""
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for edge in self.edges:
            out[edge.source].add(edge.target)
        return out


def discover_modules(package_dir: Path) -> dict[str, Path]:
    """Map every module of a package to its file.

    Args:
        package_dir: Directory of the package (its name is the root package name).

    Returns:
        Dotted module name -> ``.py`` file; packages are named without ``__init__``.
    """
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def iter_imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Yield every import statement of a syntax tree with whether it is function-local.

    Args:
        tree: A parsed module.

    Yields:
        ``(statement, local)``; ``local`` is true inside a (possibly nested) function body.
    """
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, local = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, local
        inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def import_base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Return the absolute module named by a ``from ... import`` statement.

    Args:
        module: Dotted name of the importing module.
        is_package: Whether the importing module is a package ``__init__``.
        node: The statement.

    Returns:
        The absolute dotted name before ``import`` (relative levels resolved).
    """
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def nearest_module(name: str, modules: Mapping[str, Path]) -> str | None:
    """Return the longest prefix of a dotted name that is a known module, if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def resolve_targets(module: str, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Path]) -> set[str]:
    """Return the package modules an import statement depends on.

    Args:
        module: Dotted name of the importing module.
        node: The import statement.
        modules: All modules of the package (see :func:`discover_modules`).

    Returns:
        Known package modules the statement imports (unfiltered: may hold the root package,
        the module itself or its parent).
    """
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = import_base(module, modules[module].name == "__init__.py", node)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return {target for target in (nearest_module(n, modules) for n in names) if target}


def is_ignored(source: str, target: str, root: str) -> bool:
    """Whether an edge is ignored: to the root package, to the module itself or to its parent."""
    return target == root or target == source or source.startswith(target + ".")


def build_graph(package_dir: Path) -> ImportGraph:
    """Parse every file of a package and build its in-package import graph.

    Args:
        package_dir: Directory of the package.

    Returns:
        The modules and every kept import edge (see the module docstring for the rules).
    """
    modules = discover_modules(package_dir)
    edges: list[ImportEdge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, local in iter_imports(tree):
            for target in sorted(resolve_targets(module, node, modules)):
                if not is_ignored(module, target, package_dir.name):
                    edges.append(ImportEdge(module, target, path, node.lineno, local))
    edges.sort(key=lambda e: (e.source, e.line, e.target))
    return ImportGraph(package_dir, modules, tuple(edges))


def strongly_connected(successors: Mapping[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of a graph (iterative Tarjan).

    Args:
        successors: Node -> nodes it points to; every node must be a key.

    Returns:
        Every component, each sorted, in a deterministic order.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(successors):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(successors[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def import_circles(graph: ImportGraph) -> list[str]:
    """Describe every import circle (strongly connected component of more than one module).

    Args:
        graph: The package's import graph.

    Returns:
        One message per circle: its modules and the import lines that close it.
    """
    messages = []
    for component in strongly_connected(graph.successors()):
        if len(component) < 2:
            continue
        members = set(component)
        lines = [f"    {e.where(graph.package_dir)}: {e.source} imports {e.target}"
                 for e in graph.edges if e.source in members and e.target in members]
        messages.append("circle: " + " <-> ".join(component) + "\n" + "\n".join(lines))
    return messages


def layer_ranks(layers: Mapping[int, Sequence[str]]) -> dict[str, int]:
    """Return component -> layer number from a layer table."""
    return {component: rank for rank, components in layers.items() for component in components}


def component_of(module: str, root: str) -> str:
    """Return a module's first component under the root package (``ROOT_COMPONENT`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == root else ROOT_COMPONENT


def layer_violations(graph: ImportGraph, layers: Mapping[int, Sequence[str]]) -> list[str]:
    """Describe modules outside the layer table and imports of a higher layer.

    Args:
        graph: The package's import graph.
        layers: Layer number -> top-level components, lowest first.

    Returns:
        One message per unplaced component and one per upward import statement.
    """
    ranks = layer_ranks(layers)
    messages = []
    unplaced = sorted({component_of(m, graph.root) for m in graph.modules} - ranks.keys())
    for component in unplaced:
        messages.append(f"{graph.root}.{component} is in no layer: add '{component}' to the layer "
                        f"table LAYERS in tests/test_architecture.py")
    for edge in graph.edges:
        src, dst = component_of(edge.source, graph.root), component_of(edge.target, graph.root)
        if src in ranks and dst in ranks and ranks[dst] > ranks[src]:
            messages.append(f"{edge.where(graph.package_dir)}: {edge.source} (layer {ranks[src]}, {src}) "
                            f"imports {edge.target} (layer {ranks[dst]}, {dst})")
    return messages


def local_package_imports(graph: ImportGraph, allowed: frozenset[str]) -> list[str]:
    """Describe function-local imports of package modules outside the allowed files.

    Args:
        graph: The package's import graph.
        allowed: Files (relative to the package directory, posix) that may import lazily.

    Returns:
        One message per offending import statement, naming file:line.
    """
    return [f"{e.where(graph.package_dir)}: function-local import of {e.target} in {e.source}"
            for e in graph.edges
            if e.local and e.path.relative_to(graph.package_dir).as_posix() not in allowed]


def report(title: str, messages: Sequence[str]) -> str:
    """The messages under a title, one per line (an assertion's explanation)."""
    return f"{title} ({len(messages)}):\n" + "\n".join(messages)


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    """The import graph of ``lightning_tts`` (parsed once per module)."""
    return build_graph(PACKAGE_DIR)


def test_no_import_circle(graph: ImportGraph) -> None:
    """No two package modules import each other, directly or through others."""
    circles = import_circles(graph)
    assert not circles, report("import circles", circles)


def test_no_upward_import(graph: ImportGraph) -> None:
    """Every module is in a layer and imports only its own layer or lower ones."""
    violations = layer_violations(graph, LAYERS)
    assert not violations, report("modules outside the layer table or importing upwards", violations)


def test_package_imports_are_top_level(graph: ImportGraph) -> None:
    """Package modules are imported at the top of a file, except in the CLI entry points."""
    lazy = local_package_imports(graph, LAZY_IMPORT_ALLOWED)
    assert not lazy, report(f"function-local package imports outside {', '.join(sorted(LAZY_IMPORT_ALLOWED))}", lazy)


PLANTED: dict[str, str] = {
    "__init__.py": "from pkg.high import run\n__version__ = '0'\n",
    "low.py": ("from typing import TYPE_CHECKING\n"
               "from pkg import __version__\n"
               "if TYPE_CHECKING:\n"
               "    from .high import run\n"),
    "high.py": ("import os\n"
                "import pkg.low\n"
                "def run() -> None:\n"
                "    from pkg.sub import helper\n"),
    "sub/__init__.py": "from . import helper\nfrom pkg.sub.helper import VALUE\n",
    "sub/helper.py": "from .. import low\nfrom ..sub import VALUE as OTHER\nVALUE = 1\n",
    "cli.py": "def main() -> None:\n    from .high import run\n",
    "stray.py": "import pkg\n",
}
PLANTED_LAYERS: dict[int, tuple[str, ...]] = {0: ("low", "sub"), 1: ("high",), 2: ("cli", ROOT_COMPONENT)}


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    """Write a package ``pkg`` of the given files under ``root`` and return its directory."""
    package_dir = root / "pkg"
    for name, text in files.items():
        (package_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (package_dir / name).write_text(text)
    return package_dir


def test_graph_resolves_imports(tmp_path: Path) -> None:
    """Relative, absolute, local and TYPE_CHECKING imports resolve; root/parent imports are dropped."""
    planted = build_graph(write_package(tmp_path, PLANTED))
    assert {(e.source, e.target, e.line, e.local) for e in planted.edges} == {
        ("pkg.low", "pkg.high", 4, False),  # under TYPE_CHECKING; `from pkg import __version__` dropped
        ("pkg.high", "pkg.low", 2, False),  # `import os` is not in the package
        ("pkg.high", "pkg.sub.helper", 4, True),  # `from pkg.sub import helper`: helper is a module
        ("pkg.sub", "pkg.sub.helper", 1, False),  # relative, from a package __init__
        ("pkg.sub", "pkg.sub.helper", 2, False),
        ("pkg.sub.helper", "pkg.low", 1, False),  # `from ..sub import VALUE` is its parent: dropped
        ("pkg.cli", "pkg.high", 2, True),
        ("pkg", "pkg.high", 1, False),
    }


def test_checks_detect_planted_faults(tmp_path: Path) -> None:
    """Each check reports exactly the fault planted for it, naming modules and file:line."""
    planted = build_graph(write_package(tmp_path, PLANTED))
    circles = import_circles(planted)
    assert len(circles) == 1 and circles[0].startswith("circle: pkg.high <-> pkg.low")
    assert "pkg/low.py:4: pkg.low imports pkg.high" in circles[0]
    assert "pkg/high.py:2: pkg.high imports pkg.low" in circles[0]
    assert layer_violations(planted, PLANTED_LAYERS) == [
        "pkg.stray is in no layer: add 'stray' to the layer table LAYERS in tests/test_architecture.py",
        "pkg/low.py:4: pkg.low (layer 0, low) imports pkg.high (layer 1, high)",
    ]
    assert local_package_imports(planted, frozenset({"cli.py"})) == [
        "pkg/high.py:4: function-local import of pkg.sub.helper in pkg.high",
    ]


def test_checks_pass_on_clean_package(tmp_path: Path) -> None:
    """Without the planted faults the same checks report nothing."""
    clean = dict(PLANTED, **{"low.py": "from pkg import __version__\n", "high.py": "import pkg.low\n"})
    del clean["stray.py"]
    graph = build_graph(write_package(tmp_path, clean))
    assert import_circles(graph) == []
    assert layer_violations(graph, PLANTED_LAYERS) == []
    assert local_package_imports(graph, frozenset({"cli.py"})) == []


def test_tarjan_finds_long_and_separate_circles() -> None:
    """Circles longer than two and separate circles are each one component; a DAG has none."""
    successors = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert [c for c in strongly_connected(successors) if len(c) > 1] == [["a", "b", "c"], ["d", "e"]]
    assert all(len(c) == 1 for c in strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}))
