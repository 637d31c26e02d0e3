"""``curator`` imports without cycles, hidden ones included: the graph of its modules' imports (inside
functions too) is acyclic. Only an import that carries a ``# reason`` comment on its line (an optional
heavy dependency, or start-up time) is left out."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2] / "curator"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = set()
    for node in ast.walk(ast.parse(text)):
        if "#" in lines[node.lineno - 1] if isinstance(node, (ast.Import, ast.ImportFrom)) else False:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def test_core_modules_import_without_cycles():
    paths = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {m: _imports(p, set(paths)) - {m} for m, p in paths.items()}
    state: dict[str, str] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join([*trail[trail.index(m):], m])}"
        state[m] = "open"
        for dep in sorted(graph[m]):
            visit(dep, [*trail, m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
    assert {"curator.pipeline", "curator.plan", "curator.worker"} <= set(graph)
