"""Run-directory file I/O: content hashes, atomic writes, a streaming Parquet writer.

Writers write to a temporary name in the same directory and rename it into place, so a reader never
sees half a file. They do not fsync: a unit's done marker records the size and sha256 of what it
wrote, and a rerun redoes any unit whose files a crash left short or changed (``RunDir.verify_done``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.errors import storage_error
from curator.faults import fault_point
from curator.hashing import sha256_file
from curator.sources import source_scheme, source_sha256

ROW_GROUP_BYTES = 32 << 20  # bytes of values (``row_bytes``) in a row group a ParquetSink writes

# -- hashing and atomic writes -------------------------------------------------------------------


def sha256_path(path: Path) -> str:
    """sha256 of a file, of the sorted (relative name, file sha256) list of a directory, or of
    a named source's content (``builtin:<name>``)."""
    if source_scheme(path):
        return source_sha256(path)
    if path.is_file():
        return sha256_file(path)
    return digest_of_files([(f.relative_to(path).as_posix(), sha256_file(f))
                            for f in sorted(p for p in path.rglob("*") if p.is_file())])


def bytes_on_disk(paths: list[Path]) -> int:
    """Bytes of the files, and of the files under the directories, of ``paths`` (named sources count as none)."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return total


def file_states(path: Path) -> list[tuple[str, int, int]]:
    """(name, size, modification time in ns) of a file, or of every file under a directory; empty for a
    named source. What changes when a file is written to, to tell whether it changed while it was read."""
    if path.is_file():
        return [(path.name, (st := path.stat()).st_size, st.st_mtime_ns)]
    if path.is_dir():
        return [(f.relative_to(path).as_posix(), (st := f.stat()).st_size, st.st_mtime_ns)
                for f in sorted(path.rglob("*")) if f.is_file()]
    return []


def digest_of_files(hashes: list[tuple[str, str]]) -> str:
    """A directory's digest from its (relative name, file sha256) list in ``sha256_path``'s order."""
    h = hashlib.sha256()
    for name, file_hash in hashes:
        h.update(f"{name}\0{file_hash}\n".encode())
    return h.hexdigest()


def _kind(dest: Path) -> str:
    """What a file is, for fault injection: scores, markers, ledger, manifest, ..."""
    parts = dest.parts
    for kind in ("scores", "markers", "ledger", "input", "quarantine", "added", "cache"):
        if kind in parts:
            return kind
    return dest.stem


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``. An ``OSError`` creating,
    writing or renaming it is a ``StorageError`` naming ``dest``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise storage_error(exc, dest) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; published files get normal permissions
    try:
        yield tmp_path
        fault_point(f"write:{_kind(dest)}")
        os.replace(tmp_path, dest)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise storage_error(exc, dest) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_parquet(table: pa.Table, dest: Path) -> str:
    """Atomically write ``table`` as Parquet; return the file's sha256."""
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return sha256_file(dest)


def file_record(path: Path) -> dict:
    """What a done marker records of an output: ``{"size", "sha256"}``."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def row_bytes(table: pa.Table) -> np.ndarray:
    """Bytes of each row's values (int64): string and binary lengths plus 4, fixed widths, lists and structs
    summed over their children (8 for other types). A function of the rows alone, not of how they are chunked."""
    total = np.zeros(table.num_rows, np.int64)
    for column in table.columns:
        if column.num_chunks:
            total += np.concatenate([_value_bytes(chunk) for chunk in column.chunks])
    return total


def _value_bytes(arr: pa.Array) -> np.ndarray:
    kind = arr.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        return pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64) + 4
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        child = np.concatenate([[0], np.cumsum(_value_bytes(pc.list_flatten(arr)))])
        ends = np.concatenate([[0], np.cumsum(pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False))])
        return child[ends[1:]] - child[ends[:-1]] + 4
    if pa.types.is_struct(kind):
        return sum((_value_bytes(field) for field in arr.flatten()), np.zeros(len(arr), np.int64))
    try:
        width = max(1, kind.bit_width // 8)
    except ValueError:
        width = 8
    return np.full(len(arr), width, np.int64)


class ParquetSink:
    """Writes a Parquet file from consecutive tables, atomically. Row groups are cut where the rows' values
    reach ``ROW_GROUP_BYTES`` (``row_bytes``) and written as one chunk each, so the file depends on the rows
    written, not on how they were split into tables; at most a row group plus the last table is held. A file
    whose rows fit in one row group is exactly what ``write_parquet(concat_tables(tables,
    promote_options="permissive").combine_chunks())`` writes (an empty one needs ``schema``). ``close()`` renames the file into
    place and returns its ``file_record``; leaving the ``with`` block on an exception removes it."""

    def __init__(self, dest: Path, schema: pa.Schema | None = None):
        self.dest, self.schema = dest, schema
        self._atomic = atomic_path(dest)
        self._tmp = self._atomic.__enter__()
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._sizes: list[np.ndarray] = []  # row_bytes of the buffered tables
        self._bytes = 0
        self._open = True
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        sizes = row_bytes(table)
        self._buffer.append(table)
        self._sizes.append(sizes)
        self._bytes += int(sizes.sum())
        self.rows += table.num_rows
        while self._bytes >= ROW_GROUP_BYTES:
            self._write_group(full=True)

    def _buffered(self, full: bool = False) -> pa.Table:
        """The buffered rows (``full``: those up to the row that reaches ``ROW_GROUP_BYTES``; the rest stay)."""
        table = pa.concat_tables(self._buffer, promote_options="permissive") if self._buffer else None
        if table is None:
            return self.schema.empty_table()
        sizes = np.concatenate(self._sizes)
        self._buffer, self._sizes, self._bytes = [], [], 0
        if full:
            cut = int(np.searchsorted(np.cumsum(sizes), ROW_GROUP_BYTES)) + 1
            if cut < table.num_rows:
                self._buffer, self._sizes = [table.slice(cut)], [sizes[cut:]]
                self._bytes = int(sizes[cut:].sum())
            table = table.slice(0, cut)
        return table.combine_chunks()

    def _write_group(self, full: bool = False) -> None:
        table = self._buffered(full)
        if self._writer is not None and not table.num_rows and table.schema == self._writer.schema:
            return  # only empty tables were left: no empty row group
        if self._writer is not None and table.schema != self._writer.schema:
            self._writer.close()  # a later table has other columns: rewrite what was written with both
            table = pa.concat_tables([read_parquet(self._tmp), table], promote_options="permissive")
            self._writer = None
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema, compression="zstd")
        self._writer.write_table(table)

    def close(self) -> dict:
        if self._writer is None:
            pq.write_table(self._buffered(), self._tmp, compression="zstd")
        else:
            if self._buffer:
                self._write_group()
            self._writer.close()
        self._open = False
        self._atomic.__exit__(None, None, None)
        return file_record(self.dest)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._open:
            self._open = False
            if self._writer is not None:
                self._writer.close()
            self._atomic.__exit__(exc_type, exc, tb)


def write_json(obj: object, dest: Path) -> str:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return sha256_file(dest)


READ_BATCH_ROWS = 131072  # pyarrow.parquet.read_table's batch size: each row group is read in slices of this many rows


def parquet_chunks(path: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A Parquet file (or only those of ``columns`` it has, in file order) as the one-chunk tables that make up
    ``pq.read_table``'s chunks (row groups in slices of ``READ_BATCH_ROWS``; a file without rows: one empty
    chunk), read a row group at a time. ``pq.read_table`` goes through ``pyarrow.dataset``, whose import
    loads pandas (a quarter of a second); ``ParquetFile`` does not."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    cols = None if columns is None else [c for c in names if c in columns]
    if pf.metadata.num_rows == 0:
        schema = pf.schema_arrow if cols is None else pa.schema([pf.schema_arrow.field(c) for c in cols],
                                                                  metadata=pf.schema_arrow.metadata)
        yield pa.Table.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
        return
    for i in range(pf.num_row_groups):
        group = pf.read_row_group(i, columns=cols)
        for batch in group.to_batches(max_chunksize=READ_BATCH_ROWS):
            yield pa.Table.from_batches([batch], schema=group.schema)


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or only those of ``columns`` it has, chunked as ``pq.read_table`` chunks it."""
    chunks = list(parquet_chunks(path, columns))
    return pa.concat_tables(chunks) if len(chunks) > 1 else chunks[0]
