"""``dataset:<id>`` inputs: ``datasets.load_dataset(id, config, split=..., revision=...)`` for a Hub id (when a
hub is reachable) or a local dataset repository (a directory of data files ``load_dataset`` can read).

A recipe input ``{path: "dataset:org/set", split: train, config: en, revision: v1.0}`` reaches this resolver as
``org/set?split=train&config=en&revision=v1.0`` (``curator.inputs.source_path``). The manifest records the id,
split, config, requested revision, the ``datasets`` fingerprint and (as the input's sha256) a hash of the rows.
"""

from __future__ import annotations

import hashlib
from functools import cache
from urllib.parse import parse_qsl

import pyarrow as pa

from curator.errors import InputError, RecipeError

_KEYS = ("split", "config", "revision")


def parse(name: str) -> tuple[str, dict[str, str]]:
    """``org/set?split=train`` -> ("org/set", {"split": "train"})."""
    ident, _, query = name.partition("?")
    return ident, dict(parse_qsl(query))


class HubDatasets:
    """The ``dataset`` source resolver (``curator.sources``)."""

    def __init__(self, scheme: str = "dataset"):
        self.scheme = scheme

    def check(self, name: str, where: str) -> None:
        ident, opts = parse(name)
        if not ident or set(opts) - set(_KEYS):
            raise RecipeError(f"{where}: expected dataset:<hub id or directory> with optional split, config and "
                              f"revision; got 'dataset:{name}'")

    @cache  # noqa: B019 - one load per input per process (the run hashes it, then ingest reads it)
    def _dataset(self, name: str):
        import datasets  # start-up time: `datasets` takes seconds to import; only these inputs need it

        ident, opts = parse(name)
        datasets.disable_progress_bars()
        try:
            ds = datasets.load_dataset(ident, opts.get("config"), split=opts.get("split"), revision=opts.get("revision"))
        except Exception as exc:  # datasets raises many types (not found, offline, bad config, no such split)
            raise InputError(f"dataset:{ident}: load_dataset failed: {str(exc).splitlines()[0]}. Check the id (a Hub "
                             "id or a local dataset directory), split, config and revision, and that the hub is "
                             "reachable (or the dataset cached) for a Hub id") from None
        if isinstance(ds, datasets.DatasetDict):
            if len(ds) != 1:
                raise InputError(f"dataset:{ident} has splits {sorted(ds)}; choose one with `split:` in the recipe input")
            ds = next(iter(ds.values()))
        return ds

    def load(self, name: str) -> pa.Table:
        return self._dataset(name).with_format("arrow")[:]

    def sha256(self, name: str) -> str:
        sink = pa.BufferOutputStream()
        table = self.load(name).combine_chunks()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1 << 16)
        return hashlib.sha256(sink.getvalue()).hexdigest()

    def describe(self, name: str) -> dict:
        ident, opts = parse(name)
        return {"dataset": ident, **{k: opts.get(k) for k in _KEYS}, "fingerprint": self._dataset(name)._fingerprint}
