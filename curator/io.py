"""Readers (HF dataset dir, Arrow IPC file/stream, Parquet, JSONL, CSV) and atomic writers.

Readers return ``(table, bad_rows)``: rows that cannot be parsed at all (a broken JSON line,
invalid UTF-8) are returned as ``BadRow``s with their position instead of failing the file.
A file that cannot be read at all raises ``InputError`` naming it. Writers write to a
temporary name in the same directory, fsync, then rename: a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curator.errors import InputError, RunError
from curator.faults import fault_point
from curator.sources import load_source, source_scheme, source_sha256

READ_KINDS = ("jsonl", "json", "csv", "tsv", "parquet", "arrow", "hf")


@dataclass(frozen=True)
class BadRow:
    row: int  # 0-based position in the file (line number - 1 for JSONL)
    raw: str
    reason: str


def detect_kind(path: Path) -> str:
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_info.json").exists():
            return "hf"
        raise InputError(f"{path}: a directory that is not a `datasets.save_to_disk` dataset")
    suffix = path.suffix.lower()
    kinds = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
             ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
    if suffix not in kinds:
        raise InputError(f"{path}: cannot tell the file type from '{suffix}'; use one of {sorted(kinds)}")
    return kinds[suffix]


def read_table(path: Path) -> tuple[pa.Table, list[BadRow]]:
    """Read one input file, dataset directory or named source (``builtin:<name>``)."""
    if source_scheme(path):
        return load_source(path), []
    if not path.exists():
        raise InputError(f"{path}: input not found")
    kind = detect_kind(path)
    try:
        if kind == "jsonl":
            return _read_jsonl(path)
        if kind == "json":
            return _read_json_array(path)
        if kind in ("csv", "tsv"):
            return _read_csv(path, "\t" if kind == "tsv" else ","), []
        if kind == "parquet":
            return pq.read_table(path), []
        if kind == "arrow":
            return _read_arrow(path), []
        return _read_hf(path), []
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this {kind} file: {exc}") from None


def _read_jsonl(path: Path) -> tuple[pa.Table, list[BadRow]]:
    if path.stat().st_size == 0:
        return pa.table({}), []
    try:  # fast path: a well-formed file with consistent types and valid UTF-8
        table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=1 << 26))
        table.validate(full=True)
        return table, []
    except pa.ArrowInvalid:
        pass
    rows, bad = [], []
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append(BadRow(i, line[:200].decode("utf-8", "replace"), f"invalid UTF-8 at byte {exc.start}"))
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                bad.append(BadRow(i, text[:200], f"invalid JSON: {exc.msg} (column {exc.colno})"))
                continue
            if not isinstance(obj, dict):
                bad.append(BadRow(i, text[:200], f"a JSON {type(obj).__name__}, expected an object"))
                continue
            rows.append((i, obj))
    return _rows_to_table(rows), bad


def _rows_to_table(rows: list[tuple[int, dict]]) -> pa.Table:
    """Rows of mixed types: string-typed text columns; other values kept when Arrow can type them."""
    names: dict[str, None] = {}
    for _, obj in rows:
        names.update(dict.fromkeys(obj))
    cols = {}
    for name in names:
        values = [obj.get(name) for _, obj in rows]
        try:
            cols[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            cols[name] = _mixed(values)
    cols["_file_row"] = pa.array([i for i, _ in rows], pa.int64())
    return pa.table(cols)


MIXED_TAG = "\x00json:"


def _mixed(values: list) -> pa.Array:
    """A column whose rows have different JSON types (Arrow cannot hold it as one type).

    Strings stay strings; other values become ``MIXED_TAG + typename + ":" + json`` so the
    adapter can report the row's real type.
    """
    out = [v if v is None or isinstance(v, str) else f"{MIXED_TAG}{type(v).__name__}:{json.dumps(v)}" for v in values]
    return pa.array(out, pa.string())


def _read_json_array(path: Path) -> tuple[pa.Table, list[BadRow]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid UTF-8 JSON ({exc}); use JSONL for row-level error recovery") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of objects")
    good = [(i, o) for i, o in enumerate(data) if isinstance(o, dict)]
    bad = [BadRow(i, json.dumps(o)[:200], "not a JSON object") for i, o in enumerate(data) if not isinstance(o, dict)]
    return _rows_to_table(good), bad


def _read_csv(path: Path, delimiter: str) -> pa.Table:
    if path.stat().st_size == 0:
        return pa.table({})
    header = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                            read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in header},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                          convert_options=convert)


def _read_arrow(path: Path) -> pa.Table:
    with open(path, "rb") as fh:
        magic = fh.read(6)
    source = pa.memory_map(str(path))
    if magic == b"ARROW1":
        return ipc.open_file(source).read_all()
    return ipc.open_stream(source).read_all()


def _read_hf(path: Path) -> pa.Table:
    state = path / "state.json"
    if not state.exists():
        raise InputError(f"{path}: looks like a DatasetDict; point the input at one split's directory")
    files = [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    return pa.concat_tables([ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files])


# -- hashing and atomic writes -------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """sha256 of a file, of the sorted (relative name, file sha256) list of a directory, or of
    a named source's content (``builtin:<name>``)."""
    if source_scheme(path):
        return source_sha256(path)
    if path.is_file():
        return sha256_file(path)
    return digest_of_files([(f.relative_to(path).as_posix(), sha256_file(f))
                            for f in sorted(p for p in path.rglob("*") if p.is_file())])


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
    """Yield a temporary path beside ``dest``; on success fsync and rename it onto ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; published files get normal permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        fault_point(f"write:{_kind(dest)}")
        os.replace(tmp_path, dest)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise RunError(f"could not write {dest}: {exc.strerror or exc}; check free space and permissions") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_parquet(table: pa.Table, dest: Path) -> str:
    """Atomically write ``table`` as Parquet; return the file's sha256."""
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return sha256_file(dest)


def write_json(obj: object, dest: Path) -> str:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return sha256_file(dest)


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or only those of ``columns`` it has."""
    if columns is None:
        return pq.read_table(path)
    return pq.read_table(path, columns=[c for c in pq.read_schema(path).names if c in columns])
