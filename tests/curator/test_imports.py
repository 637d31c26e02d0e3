"""The project's packages (``curator``, ``filters``, ``benchmarks``, ``tools``) import without cycles, hidden ones included: the graph of its modules' imports (inside
functions too) is acyclic. Only an import that carries a ``# reason`` comment on its line (an optional
heavy dependency, or start-up time) is left out."""

import ast
from pathlib import Path

REPO = Path(__file__).parents[2]
PACKAGES = ("curator", "filters", "benchmarks", "tools")


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
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


def test_project_modules_import_without_cycles():
    paths = {_module(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
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


def test_engine_core_reaches_models_and_reference_data_only_through_hooks():
    """``curator``'s core and CLI import neither the model toolkit (``curator.ml``), the reference data
    (``curator.refdata``) nor the stages (``filters``): stages come through the registry, named inputs
    through ``curator.sources``."""
    core = [p for p in (REPO / "curator").rglob("*.py") if p.parent.name not in ("ml", "refdata")]
    for path in core:
        imported = _all_names(path)
        bad = sorted(n for n in imported if n.split(".")[0] == "filters" or n.startswith(("curator.ml", "curator.refdata")))
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def _all_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names
