"""A keyed, append-only row store in a directory of Parquet parts: the one cache format of curator.

``KeyedStore(directory, key, schema)`` keeps rows of ``schema`` addressed by the string column ``key``
(a sample id, a rollout id, a verdict key) in ``directory/part-<sha256 of the part's keys>.parquet``.
Parts are written atomically and never rewritten, so several workers may add to one store and a killed
process loses at most the part it was writing. The first stored row of a key wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.hashing import sha256_parts
from curator.io import write_parquet


class KeyedStore:
    def __init__(self, directory: str | Path, key: str, schema: pa.Schema):
        self.directory, self.key, self.schema = Path(directory), key, schema
        self._index: dict[str, str] = {}  # key -> part file name
        self._seen: set[str] = set()

    def _refresh(self) -> None:
        for part in sorted(self.directory.glob("part-*.parquet")):
            if part.name not in self._seen:
                for k in pq.read_table(part, columns=[self.key]).column(0).to_pylist():
                    self._index.setdefault(k, part.name)
                self._seen.add(part.name)

    def keys(self) -> set[str]:
        self._refresh()
        return set(self._index)

    def get(self, keys: Sequence[str]) -> dict[str, dict]:
        """Stored rows for those of ``keys`` that exist: {key: row}."""
        self._refresh()
        by_part: dict[str, set[str]] = {}
        for k in set(keys):
            if k in self._index:
                by_part.setdefault(self._index[k], set()).add(k)
        found: dict[str, dict] = {}
        for part, ks in sorted(by_part.items()):
            t = pq.read_table(self.directory / part)
            for row in t.filter(pc.is_in(t.column(self.key), pa.array(sorted(ks), pa.string()))).to_pylist():
                if self._index[row[self.key]] == part:
                    found.setdefault(row[self.key], row)
        return found

    def add(self, rows: Sequence[dict]) -> None:
        """Store ``rows`` (keys already stored are skipped) as one new part."""
        self._refresh()
        rows = [r for r in rows if r[self.key] not in self._index]
        if not rows:
            return
        table = pa.Table.from_pylist(list(rows), schema=self.schema)
        name = "part-" + sha256_parts(*sorted(r[self.key] for r in rows))[:24] + ".parquet"
        write_parquet(table, self.directory / name)
        self._seen.add(name)
        for r in rows:
            self._index.setdefault(r[self.key], name)
