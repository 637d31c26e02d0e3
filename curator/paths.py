"""Path confinement: data paths named in recipes and stage params stay inside allowed roots.

Allowed roots are the recipe's directory, the working directory, ``CURATOR_ALLOWED_ROOTS``
(``os.pathsep``-separated) and roots the caller passes (``curator run --input``); a registered
named source (``builtin:advbench``) is checked against its resolver instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from curator.errors import RecipeError
from curator.sources import check_source, source_scheme


def allowed_roots(base_dir: Path, extra: tuple[Path, ...] = ()) -> list[Path]:
    """The allowed roots, resolved, each once (the recipe's directory is often the working directory)."""
    env = [Path(p) for p in os.environ.get("CURATOR_ALLOWED_ROOTS", "").split(os.pathsep) if p]
    return list(dict.fromkeys(p.resolve() for p in (base_dir, Path.cwd(), *env, *extra)))


def resolve_input(path: str, base_dir: Path, extra_roots: tuple[Path, ...], where: str) -> Path:
    """Resolve an input path (symlinks followed) and check it stays inside an allowed root."""
    if source_scheme(path):
        check_source(path, where)
        return Path(path)
    resolved = (base_dir / path).resolve()
    roots = allowed_roots(base_dir, extra_roots)
    if not any(resolved == r or r in resolved.parents for r in roots):
        raise RecipeError(
            f"{where}: '{path}' resolves to {resolved}, outside the allowed roots "
            f"({', '.join(map(str, roots))}). Move the data under the recipe's directory, pass it on the "
            "command line (`curator run RECIPE --input PATH`), or add its folder to CURATOR_ALLOWED_ROOTS."
        )
    return resolved
