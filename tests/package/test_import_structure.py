"""No import circles among shufflenet_pl's modules.

The graph counts module-level imports only (including those under ``if TYPE_CHECKING:``, which tools
such as type checkers follow), not imports inside functions: a lazy in-function import runs after
both modules are fully initialised, so it cannot fail the way a circle at import time does, and it is
the usual way to keep a heavy optional dependency (FFCV, wandb) off the import path. Nor does the
package import the launcher (``cluster``), at any level.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "shufflenet_pl"
ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ("cluster", "launch")  # the launcher's modules beside the package


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements executed when the module is imported (not those inside functions)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            else:  # if/try/with/class bodies run at import time
                for field in ("body", "orelse", "finalbody", "handlers"):
                    child = getattr(node, field, None)
                    if isinstance(child, list):
                        visit(
                            [c for c in child if isinstance(c, ast.stmt)]
                            + [s for h in child if isinstance(h, ast.ExceptHandler) for s in h.body]
                        )

    visit(tree.body)
    return found


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Edges module -> the package's modules it imports at import time."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in top_level_imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
            for target in targets:
                # `import a.b.c` imports a, a.b and a.b.c; keep the package's own modules only.
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    candidate = ".".join(parts[:i])
                    if candidate in files and candidate != name:
                        graph[name].add(candidate)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def parent_package_edges_are_not_cycles(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges from a package's ``__init__`` to its own submodules' parents.

    Importing ``pkg.sub`` runs ``pkg/__init__`` first; that edge (sub -> pkg) is implied by Python,
    not written by us, and `pkg/__init__` importing `pkg.sub` is the normal re-export pattern.
    """
    pruned = {k: set(v) for k, v in graph.items()}
    for name, targets in pruned.items():
        for target in list(targets):
            if name.startswith(target + "."):
                targets.discard(target)  # a submodule importing its own package
    return pruned


def test_no_import_cycles_in_package() -> None:
    graph = parent_package_edges_are_not_cycles(import_graph(ROOT))
    assert len(graph) > 20, "the package's modules were not found"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_detects_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from .a import x\n")
    (pkg / "data" / "a.py").write_text("from .b import y\nx = 1\n")
    (pkg / "data" / "b.py").write_text(
        "try:\n    from shufflenet_pl.data import a\nexcept ImportError:\n    pass\ny = 2\n"
    )
    (pkg / "lazy.py").write_text("def f():\n    from shufflenet_pl import lazy2\n")
    (pkg / "lazy2.py").write_text("from shufflenet_pl import lazy\n")
    graph = parent_package_edges_are_not_cycles(import_graph(tmp_path))
    cycle = find_cycle(graph)
    assert cycle is not None and {"shufflenet_pl.data.a", "shufflenet_pl.data.b"} <= set(cycle)
    assert graph["shufflenet_pl.lazy"] == set()  # an import inside a function is not an edge


def test_package_does_not_import_the_launcher() -> None:
    """Training code knows nothing of the launcher: no import of ``cluster`` (or ``launch``) anywhere in
    the package, not even inside a function; the launcher imports the callbacks it names instead."""
    offenders = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in LAUNCHER]
    assert offenders == []
