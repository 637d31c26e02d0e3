"""Inputs shipped with curator or its offline data packages, named in recipes as ``builtin:<name>``
(registered as the ``builtin`` scheme of ``curator.sources``).

``builtin:advbench`` (520 harmful behaviours with categories), ``builtin:harmbench`` (200),
``builtin:do_not_answer`` (939), ``builtin:overrefusal`` (150 benign-but-edgy prompts) hold
prompts only (no response: use ``normalize: {require_response: false}``);
``builtin:demo_pool`` is the bundled benign instruction/response pool (1,250 rows).
Read at run time from the installed packages; hashed by content for the manifest.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from curator.refdata import anchors, demo_pool


class BuiltinInputs:
    """The ``builtin:`` source resolver."""

    loaders: dict[str, Callable[[], pa.Table]] = {
        "advbench": anchors.advbench, "harmbench": anchors.harmbench_prompts,
        "do_not_answer": anchors.do_not_answer, "overrefusal": anchors.overrefusal_prompts,
        "demo_pool": demo_pool.load_demo_pool,
    }

    def names(self) -> list[str]:
        return sorted(self.loaders)

    def load(self, name: str) -> pa.Table:
        table = self.loaders[name]()
        if "source" in table.column_names:
            table = table.drop_columns(["source"])
        return table.append_column("source", pa.array([name] * table.num_rows, pa.string()))

    def sha256(self, name: str) -> str:
        return anchors.table_sha256(self.load(name))
