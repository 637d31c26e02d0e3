"""Inputs shipped with curator or its offline data packages, named in recipes as ``builtin:<name>``.

``builtin:advbench`` (520 harmful behaviours with categories), ``builtin:harmbench`` (200),
``builtin:do_not_answer`` (939), ``builtin:overrefusal`` (150 benign-but-edgy prompts) hold
prompts only (no response: use ``normalize: {require_response: false}``);
``builtin:demo_pool`` is the bundled benign instruction/response pool (1,250 rows).
Read at run time from the installed packages; hashed by content for the manifest.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from curator.errors import RecipeError

PREFIX = "builtin:"


def _loaders() -> dict[str, Callable[[], pa.Table]]:
    from curator import anchors, demo_pool

    return {"advbench": anchors.advbench, "harmbench": anchors.harmbench_prompts,
            "do_not_answer": anchors.do_not_answer, "overrefusal": anchors.overrefusal_prompts,
            "demo_pool": demo_pool.load_demo_pool}


def is_builtin(path: object) -> bool:
    return str(path).startswith(PREFIX)


def builtin_names() -> list[str]:
    return sorted(_loaders())


def load_builtin(path: object) -> pa.Table:
    name = str(path).removeprefix(PREFIX)
    loaders = _loaders()
    if name not in loaders:
        raise RecipeError(f"unknown built-in input '{path}'; available: {[PREFIX + n for n in sorted(loaders)]}")
    table = loaders[name]()
    if "source" in table.column_names:
        table = table.drop_columns(["source"])
    return table.append_column("source", pa.array([name] * table.num_rows, pa.string()))


def builtin_sha256(path: object) -> str:
    from curator.anchors import table_sha256

    return table_sha256(load_builtin(path))
