"""Input readers (HF dataset dir, Arrow IPC file/stream, Parquet, JSONL, JSON array, CSV/TSV, named
sources), streamed in blocks of bounded size.

Text files (JSONL, JSON, CSV, TSV) may be compressed: ``.gz``, ``.bz2``, ``.zst`` (``data.jsonl.zst``), read
as a stream (``open_input``); the input's sha256 is the compressed file's.

``read_blocks(path)`` yields ``Block``s in file order: the parsed rows, their file rows, and the rows in that
range that could not be parsed at all (a broken JSON line, invalid UTF-8) as ``BadRow``s instead of failing
the file. A file that cannot be read at all raises ``InputError`` naming it.

A row's file row (the ledger's and quarantine's ``input_row``) is, 0-based: for JSONL its line in the
(decompressed) file, blank lines counted (a line ends at ``\n``, ``\r\n`` or a lone ``\r``), on every reader
path; for CSV/TSV its data row (the header and blank lines are no rows; a quoted field may span lines); for a
JSON array its element; for Parquet, Arrow and ``save_to_disk`` data its row. ``limit`` and ``sample`` count
rows, not lines (``row_positions``).

JSONL is cut into blocks of whole lines, one in memory at a time, each parsed by Arrow; the first
block fixes the column types. A later block that does not fit them (a type change, a new column, a
broken line, invalid UTF-8, a line that does not hold exactly one JSON value) makes the reader start over on
the whole-file path (``read_table``: Arrow's reader over the file, else line by line with per-row errors) and
yield ``Restart`` first, so a consumer drops what it took from the stream: both paths give the same rows,
types and file rows for a well-formed file.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curator.errors import InputError
from curator.sources import load_source, source_scheme

READ_KINDS = ("jsonl", "json", "csv", "tsv", "parquet", "arrow", "hf")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}  # of text inputs: Arrow's codecs
TEXT_KINDS = ("jsonl", "json", "csv", "tsv")
FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
              ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_LONE_CR = re.compile(rb"\r(?!\n)")  # a line end of its own (``_line_ends``)
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, as ``surrogateescape`` decodes them
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which a text input may start with
BLOCK_BYTES = 16 << 20  # input bytes (or in-memory Arrow bytes) per block
PART_BYTES = 64 << 20  # bytes of a large input per ingest unit (``input_parts``)
FILE_ROW = "_file_row"  # the rows' file rows in a whole-file table, until ``_slices`` reads them
MIXED_TAG = "\x00json:"
_SPACE = np.zeros(256, np.bool_)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True  # the bytes ``bytes.strip`` removes, by byte value


@dataclass(frozen=True)
class BadRow:
    row: int  # its file row (see the module docstring)
    raw: str
    reason: str


@dataclass(frozen=True)
class Block:
    """Consecutive rows of one input: ``table`` (parsed rows), ``rows`` (their file rows, int64) and the
    unparseable rows whose position falls in this block (the last block takes those after it)."""

    table: pa.Table
    rows: pa.Array
    bad: list[BadRow] = field(default_factory=list)


class Restart:
    """Yielded by ``read_blocks`` before it re-reads a file from the start on the whole-file path."""


def detect_kind(path: Path) -> str:
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_info.json").exists():
            return "hf"
        if (path / "dataset_dict.json").exists():
            raise InputError(_dataset_dict(path))
        raise InputError(f"{path}: a directory that is not a `datasets.save_to_disk` dataset")
    codec = _codec(path)
    suffix = (Path(path.stem) if codec else path).suffix.lower()
    kinds = FILE_KINDS
    if suffix not in kinds:
        raise InputError(f"{path}: cannot tell the file type from '{suffix}'; use one of {sorted(kinds)}, "
                         f"text ones optionally compressed ({', '.join(COMPRESSIONS)})")
    if codec and kinds[suffix] not in TEXT_KINDS:
        raise InputError(f"{path}: a compressed {kinds[suffix]} file; decompress it (Parquet and Arrow files "
                         "compress their columns themselves)")
    if kinds[suffix] in ("json", "jsonl"):
        stat = path.stat()
        return _json_text_kind(str(path), stat.st_size, stat.st_mtime_ns) or kinds[suffix]
    return kinds[suffix]


@functools.lru_cache(maxsize=64)
def _json_text_kind(path: str, size: int, mtime_ns: int) -> str | None:
    """What a ``.json``/``.jsonl`` file holds, by its first line that is not blank (``size`` and ``mtime_ns`` key
    the cache): ``jsonl`` if it is a JSON object (JSON Lines, which ``.json`` files often hold), ``json`` if it is
    a JSON array or the start of one (``[`` on a line of its own: a pretty-printed array) or ``{`` on a line of its
    own (pretty-printed objects one after another, as ``jq`` writes them); None if it tells nothing (the file's
    name decides)."""
    try:
        first = next((t for line in input_lines(Path(path)) if (t := line.removeprefix(BOM).strip())), b"")
    except Exception:  # noqa: BLE001 (a file that cannot be decompressed: its reader says what is wrong)
        return None
    try:
        value = json.loads(first)
    except ValueError:
        return "json" if first.startswith(b"[") or first == b"{" else None
    return "jsonl" if isinstance(value, dict) else "json" if isinstance(value, list) else None


def _dataset_dict(path: Path) -> str:
    """Why a ``DatasetDict.save_to_disk`` directory is not an input, and which of its splits' directories are."""
    splits = sorted(p.name for p in path.iterdir() if (p / "state.json").exists())
    return (f"{path}: a `datasets.DatasetDict` saved with save_to_disk (splits: {', '.join(splits) or 'none'}); an "
            f"input is one split: point its path at that split's directory ({', '.join(str(path / s) for s in splits)})")


def _codec(path: Path) -> str | None:
    return COMPRESSIONS.get(path.suffix.lower())


def is_data_file(path: Path) -> bool:
    """A file whose name says it is an input curator reads (``FILE_KINDS``, text ones optionally compressed)."""
    return (Path(path.stem) if _codec(path) else path).suffix.lower() in FILE_KINDS


def is_dataset_dir(path: Path) -> bool:
    """A ``datasets`` ``save_to_disk`` directory (a ``Dataset`` or a ``DatasetDict``)."""
    return any((path / name).exists() for name in ("state.json", "dataset_info.json", "dataset_dict.json"))


def input_stem(path: Path) -> str:
    """The file name without its type and compression suffixes (``data.jsonl.gz`` -> ``data``)."""
    return Path(path.stem).stem if _codec(path) else path.stem


def open_input(path: Path):
    """A binary stream of the file's content, decompressed if its name says it is compressed."""
    codec = _codec(path)
    return pa.input_stream(str(path), compression=codec) if codec else open(path, "rb")


def input_lines(path: Path) -> Iterator[bytes]:
    """The file's lines, each with its ``\\n`` (as iterating the decompressed file in binary mode gives them)."""
    rest = b""
    with open_input(path) as fh:
        while block := fh.read(1 << 20):
            *lines, rest = (rest + block).split(b"\n")
            for line in lines:
                yield line + b"\n"
    if rest:
        yield rest


def read_blocks(path: Path) -> Iterator[Block | Restart]:
    """The rows of one input file, dataset directory or named source (``builtin:<name>``), in blocks."""
    if source_scheme(path):
        yield from _slices(load_source(path), [], numbered=True)
        return
    if not path.exists():
        raise InputError(f"{path}: input not found")
    kind = detect_kind(path)
    with _read_errors(path, kind):
        if kind == "jsonl":
            yield from _jsonl_blocks(path)
        elif kind == "json":
            yield from _slices(*_read_json_array(path), numbered=True)
        elif kind in ("csv", "tsv"):
            yield from _csv_blocks(path, "\t" if kind == "tsv" else ",")
        elif kind == "parquet":
            yield from _parquet_blocks(path)
        else:
            yield from _ipc_blocks(path, kind)


@contextmanager
def _read_errors(path: Path, kind: str) -> Iterator[None]:
    """A reader's error as an ``InputError`` naming the file."""
    try:
        yield
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this {kind} file: {exc}") from None


def read_file(path: Path) -> tuple[pa.Table, list[BadRow]]:
    """A whole input (any kind ``read_blocks`` reads) as one table, its rows' file rows in ``FILE_ROW`` (the
    rows ``read_blocks`` gives for a source's table that has it), and its unparseable rows (for callers that
    need it at once, such as a fetched URL input)."""
    tables: list[pa.Table] = []
    bad: list[BadRow] = []
    for block in read_blocks(path):
        if isinstance(block, Restart):
            tables, bad = [], []
            continue
        tables.append(_with_file_rows(block.table, block.rows, path))
        bad.extend(block.bad)
    if not tables:
        return pa.table({}), bad
    return pa.concat_tables(tables, promote_options="permissive"), bad


def row_positions(path: Path, limit: int | None = None) -> list[int]:
    """The file rows of an input's rows in file order, parsed or not (its first ``limit`` rows if given): what
    ``sample`` chooses from."""
    rows: list[int] = []
    for block in read_blocks(path):
        if isinstance(block, Restart):
            rows = []
            continue
        rows += _block_rows(block)
        if limit is not None and len(rows) >= limit:
            break
    return rows[:limit]


def rows_end(path: Path, limit: int) -> int | None:
    """The file row of an input's row ``limit`` (0-based, parsed or not), None if it has no more rows: the rows
    ``limit`` keeps are those before it. Only as much of the file is read."""
    seen = 0
    for block in read_blocks(path):
        if isinstance(block, Restart):
            seen = 0
            continue
        rows = _block_rows(block)
        if seen + len(rows) > limit:
            return rows[limit - seen]
        seen += len(rows)
    return None


def _block_rows(block: Block) -> list[int]:
    """The file rows of a block's rows, parsed or not, in file order."""
    return sorted([*block.rows.to_pylist(), *(b.row for b in block.bad)])


def _numbered(batches: Iterator[pa.RecordBatch | pa.Table], first: int = 0) -> Iterator[Block]:
    """Blocks of consecutive batches, file rows counted from ``first``."""
    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        yield Block(table, pa.array(np.arange(first, first + table.num_rows, dtype=np.int64)))
        first += table.num_rows


def _with_file_rows(table: pa.Table, rows: pa.Array | list[int], path: Path | str) -> pa.Table:
    """``table`` with its rows' file rows in ``FILE_ROW`` (read back by ``_slices(numbered=True)``); an input
    column of that name is an ``InputError`` (``samples.ENGINE_COLUMNS``)."""
    if FILE_ROW in table.column_names:
        raise InputError(f"{path}: column '{FILE_ROW}' has a name curator uses for its own columns; rename it "
                         f"(e.g. '{FILE_ROW.lstrip('_')}')")
    return table.append_column(FILE_ROW, pa.array(rows, pa.int64()))


def _slices(table: pa.Table, bad: list[BadRow], numbered: bool = False) -> Iterator[Block]:
    """A whole-file table cut into blocks; with ``numbered``, its ``FILE_ROW`` column (``_with_file_rows``; if
    present) gives the rows, else the position."""
    if numbered and FILE_ROW in table.column_names:
        rows, table = table.column(FILE_ROW).combine_chunks(), table.drop_columns([FILE_ROW])
    else:
        rows = pa.array(range(table.num_rows), pa.int64())
    step = max(1, table.num_rows * BLOCK_BYTES // max(1, table.nbytes)) if table.num_rows else 1
    starts = list(range(0, table.num_rows, step)) or [0]
    bad = sorted(bad, key=lambda b: b.row)
    for k, start in enumerate(starts):
        last = k == len(starts) - 1
        end_row = None if last else rows[starts[k + 1]].as_py()
        mine = [b for b in bad if last or b.row < end_row]
        bad = bad[len(mine):]
        length = min(step, table.num_rows - start)  # (a table without columns slices to any length)
        yield Block(table.slice(start, length), rows.slice(start, length), mine)


def _jsonl_blocks(path: Path) -> Iterator[Block | Restart]:
    """Blocks of whole lines, one in memory at a time; the first fixes the types of all."""
    if path.stat().st_size == 0:
        return
    streamed, schema = 0, None
    try:
        for line, chunk, ends in _LineChunks(path):
            table = _parse_lines(chunk, schema)
            rows = line + _row_lines(chunk, ends, table.num_rows)
            schema = schema or table.schema
            yield Block(table, pa.array(rows, pa.int64()))
            streamed += table.num_rows
        return
    except pa.ArrowInvalid:
        pass
    if streamed:
        yield Restart()
    yield from _slices(*read_table(path), numbered=True)


def _parse_lines(chunk: memoryview, schema: pa.Schema | None) -> pa.Table:
    """Whole JSONL lines parsed by Arrow, with ``schema``'s types (and no other field) if given, else inferred;
    ``ArrowInvalid`` if they do not parse or fit, or hold invalid UTF-8."""
    opts = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error") if schema else None
    table = pajson.read_json(pa.BufferReader(chunk), read_options=pajson.ReadOptions(block_size=len(chunk) + 1),
                             parse_options=opts)
    table.validate(full=True)
    return table


class PartUnreadable(Exception):
    """A part of a split JSONL file that the streamed reader cannot read alone (the file is read whole instead)."""


def input_parts(path: Path) -> int:
    """Into how many parts of about ``PART_BYTES`` an input is read in parallel: an uncompressed JSONL file by
    byte ranges (its lines can be found from any offset), a Parquet file by row groups, an Arrow file or a
    ``save_to_disk`` directory by row ranges; anything else (compressed text, CSV, a JSON array) whole."""
    try:
        kind = None if source_scheme(path) or _codec(path) or not path.exists() else detect_kind(path)
        if kind not in ("jsonl", "parquet", "arrow", "hf"):
            return 1
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if kind == "hf" else path.stat().st_size
        parts = -(-size // PART_BYTES)
        if kind == "parquet":
            parts = min(parts, pq.ParquetFile(path).metadata.num_row_groups)
    except (InputError, OSError, pa.ArrowInvalid):
        return 1  # read whole: the reader says what is wrong with it
    return max(1, parts)


def first_block(path: Path) -> pa.Table | None:
    """The first block with rows ``read_blocks`` gives of an input ``input_parts`` splits, which fixes what all
    its parts are read with; None for a JSONL file whose first block does not parse, or a file without rows (it
    is read whole)."""
    if detect_kind(path) == "jsonl":
        for chunk in _line_chunks(path):
            try:
                return _parse_lines(chunk, None)
            except pa.ArrowInvalid:
                return None
        return None
    for block in read_blocks(path):
        if block.table.num_rows:
            return block.table
    return None


def part_blocks(path: Path, part: int, parts: int, schema: bytes) -> Iterator[Block]:
    """Part ``part`` of ``parts`` of an input ``input_parts`` splits, in blocks whose rows are numbered from 0
    within the part (the caller shifts them by the rows of the parts before); a JSONL part is parsed with
    ``schema``, its file's ``first_block`` types (serialised)."""
    kind = detect_kind(path)
    with _read_errors(path, kind):
        if kind == "parquet":
            yield from _parquet_blocks(path, part, parts)
        elif kind in ("arrow", "hf"):
            yield from _ipc_blocks(path, kind, part, parts)
        else:
            yield from jsonl_part_blocks(path, part, parts, pa.ipc.read_schema(pa.py_buffer(schema)))


def part_range(path: Path, part: int, parts: int) -> tuple[int, int]:
    """Byte range [start, end) of ``part`` of ``parts``: the lines that start in its share of the file."""
    size = path.stat().st_size
    return _line_start(path, size * part // parts, size), _line_start(path, size * (part + 1) // parts, size)


def _line_start(path: Path, pos: int, size: int) -> int:
    """The first line start at or after ``pos``: 0, or just after a ``\\n`` (``size`` if there is none)."""
    if pos <= 0:
        return 0
    with open(path, "rb") as fh:
        fh.seek(pos - 1)
        while chunk := fh.read(1 << 16):
            if (i := chunk.find(b"\n")) >= 0:
                return fh.tell() - len(chunk) + i + 1
    return size


def jsonl_part_blocks(path: Path, part: int, parts: int, schema: pa.Schema) -> Iterator[Block]:
    """``part`` of ``parts`` of an uncompressed JSONL file (``part_range``) in blocks parsed with ``schema`` (the
    file's ``first_block`` types), rows numbered by their line from 0 within the part: the rows ``read_blocks``
    gives for those lines. The caller shifts them by the rows of the parts before, which are their lines only
    if no line before is blank: a blank line in a part with rows after it raises ``PartUnreadable``, as a block
    that does not parse or fit ``schema`` does (where ``read_blocks`` starts over on the whole-file path)."""
    start, end = part_range(path, part, parts)
    chunks, rows = _LineChunks(path, start, end), 0
    for line, chunk, ends in chunks:
        try:
            table = _parse_lines(chunk, schema)
            lines = line + _row_lines(chunk, ends, table.num_rows)
        except pa.ArrowInvalid as exc:
            raise PartUnreadable(str(exc)) from None
        yield Block(table, pa.array(lines, pa.int64()))
        rows += table.num_rows
    if chunks.lines != rows and end < path.stat().st_size:
        raise PartUnreadable(f"{chunks.lines - rows} blank line(s) before the last part: the file is read whole to "
                             "number its rows by line")


def _line_chunks(path: Path, start: int = 0, end: int | None = None) -> Iterator[memoryview]:
    """The file (or its bytes [start, end) of an uncompressed file) in chunks of about ``BLOCK_BYTES`` that end
    at a line end (a longer line is one chunk); chunks of whitespace only are skipped."""
    return (chunk for _, chunk, _ in _LineChunks(path, start, end))


class _LineChunks:
    """The chunks of ``_line_chunks`` as (the 0-based number of the chunk's first line, counted from ``start``,
    the chunk, where its lines end: ``_line_ends``); after the loop ``lines`` is how many lines ended in the
    range."""

    def __init__(self, path: Path, start: int = 0, end: int | None = None):
        self.path, self.start, self.end, self.lines = path, start, end, 0

    def __iter__(self) -> Iterator[tuple[int, memoryview, np.ndarray]]:
        for chunk in _chunks(self.path, self.start, self.end):
            ends = _line_ends(np.frombuffer(chunk, np.uint8))
            if not _blank(chunk):
                yield self.lines, chunk, ends
            self.lines += len(ends)


def _chunks(path: Path, start: int, end: int | None) -> Iterator[memoryview]:
    """The chunks of ``_line_chunks``, whitespace-only ones included. Each chunk is read into a buffer of its own
    and handed out as a view (no copy of the block: the cut and the carry-over touch only the tail). A buffer is
    no larger than what is left of an uncompressed file (a small file does not pay for 16 MB)."""
    rest = b""
    size = None if _codec(path) else (path.stat().st_size if end is None else end)
    with open_input(path) as fh:
        if start:
            fh.seek(start)
        while True:
            left = BLOCK_BYTES if size is None else min(BLOCK_BYTES, max(size - fh.tell(), 0))
            buf = bytearray(len(rest) + left)
            buf[:len(rest)] = rest
            n = fh.readinto(memoryview(buf)[len(rest):])
            if not n:
                break
            end = len(rest) + n
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut == 0:
                rest = bytes(buf[:end])
                continue
            rest = bytes(buf[cut:end])
            yield memoryview(buf)[:cut]
    if rest:
        yield memoryview(rest)


def _blank(chunk: memoryview) -> bool:
    """Only ASCII whitespace (what ``bytes.strip`` removes)? A chunk starting with anything else is not."""
    return not len(chunk) or (chunk[0] in b" \t\n\r\x0b\x0c" and not bytes(chunk).strip())


def _line_ends(data: np.ndarray) -> np.ndarray:
    """Where the lines of ``data`` (bytes as uint8) end: each ``\\n``, and each ``\\r`` not followed by one (a line
    ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as Arrow's JSON reader and text editors count lines)."""
    ends, cr = np.flatnonzero(data == 10), np.flatnonzero(data == 13)  # (a file without \r: one pass each)
    lone = cr[(cr + 1 == len(data)) | (data[np.minimum(cr + 1, len(data) - 1)] != 10)]
    return np.union1d(ends, lone) if len(lone) else ends


def _filled_lines(chunk: memoryview, ends: np.ndarray) -> np.ndarray:
    """The 0-based numbers of the chunk's lines (ending at ``ends``) that hold more than whitespace."""
    data = np.frombuffer(chunk, np.uint8)
    starts = np.concatenate(([0], ends + 1))
    starts = starts[starts < len(data)]
    filled = ~_SPACE[data[starts]]  # a line that starts with anything but whitespace; the others are checked whole
    for k in np.flatnonzero(~filled):
        filled[k] = bool(bytes(chunk[starts[k]:ends[k] + 1 if k < len(ends) else len(data)]).strip())
    return np.flatnonzero(filled)


def _row_lines(chunk: memoryview, ends: np.ndarray, n_rows: int) -> np.ndarray:
    """The 0-based line in ``chunk`` (its lines ending at ``ends``) of each of the ``n_rows`` rows Arrow parsed
    from it: its lines that hold more than whitespace, one row each. ``ArrowInvalid`` if they are not one per
    row (a line with two JSON values, or a value over several lines): the line-by-line reader then says which
    line is wrong."""
    lines = _filled_lines(chunk, ends)
    if len(lines) != n_rows:
        raise pa.ArrowInvalid(f"{len(lines)} non-blank line(s) hold {n_rows} JSON value(s), expected one per line")
    return lines


def _csv_blocks(path: Path, delimiter: str) -> Iterator[Block | Restart]:
    """Every column as text, streamed by Arrow; a file with a row Arrow cannot take (a wrong number of fields,
    invalid UTF-8), or whose last quoted field is never closed (Arrow reads the rest of the file into it), is
    read again row by row (``Restart`` first), those rows quarantined."""
    if path.stat().st_size == 0:
        return
    streamed, last = 0, None
    try:
        header = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
        convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in header},
                                       strings_can_be_null=False, quoted_strings_can_be_null=False)
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
                                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                                convert_options=convert)
        for block in _numbered(reader, streamed):
            yield block
            streamed += block.table.num_rows
            last = block.table.column(block.table.num_columns - 1)[-1].as_py() if block.table.num_rows else last
        if last is None or not _runs_to_the_end(path, last, delimiter):
            return
    except pa.ArrowInvalid:
        pass
    if streamed:
        yield Restart()
    yield from _slices(*_read_csv_rows(path, delimiter), numbered=True)


def _runs_to_the_end(path: Path, value: str, delimiter: str) -> bool:
    """Is ``value``, the last field Arrow read, a quoted field that is never closed: one over several lines that
    the file ends in (its opening quote, then its text to the last byte)?"""
    if "\n" not in value and "\r" not in value:
        return False
    opened = ('"' + value.replace('"', '""')).encode("utf-8")
    with open_input(path) as fh:
        if not _codec(path):
            fh.seek(max(0, path.stat().st_size - len(opened) - 1))
        tail = b""
        while block := fh.read(1 << 20):
            tail = (tail + block)[-len(opened) - 1:]
    return tail[1:] == opened and tail[:1] in (delimiter.encode(), b"\n", b"\r")


def _read_csv_rows(path: Path, delimiter: str) -> tuple[pa.Table, list[BadRow]]:
    """A CSV file row by row (Python's ``csv``): rows are numbered as Arrow numbers them (blank lines are no
    rows); one with another number of fields than the header, with invalid UTF-8, or whose quoted field is never
    closed (that row is its first line: the lines after it are rows of their own, ``_csv_records``) is a
    ``BadRow``. A field may be as long as Arrow reads it (Python's ``csv`` stops at 128 KB by default)."""
    csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))  # process-wide: only ever raised
    lines = (line.removeprefix(BOM) if i == 0 else line for i, line in enumerate(input_lines(path)))
    records = _csv_records((line.decode("utf-8", "surrogateescape") for line in lines), delimiter)
    header, taken = next(records, ([], []))
    if header is None:
        raise InputError(f'{path}: the header opens a quoted field (") that is never closed; close it')
    rows, bad, i, line = [], [], 0, 1 + len(taken)  # line: the 1-based line the record starts on
    for fields, taken in records:
        raw = _shown(taken[0].rstrip("\r\n") if fields is None else delimiter.join(fields))
        if fields is None:
            bad.append(BadRow(i, raw, _unterminated(i, line)))
        elif not fields:  # a blank line: no row
            line += len(taken)
            continue
        elif len(fields) != len(header):
            bad.append(BadRow(i, raw, f"{len(fields)} field(s), the header has {len(header)}"))
        elif any(_SURROGATE.search(f) for f in fields):
            bad.append(BadRow(i, raw, "invalid UTF-8"))
        else:
            rows.append((i, dict(zip(header, fields))))
        i, line = i + 1, line + len(taken)
    return _rows_to_table(rows, path), bad


def _unterminated(row: int, line: int) -> str:
    return (f"unterminated quoted field starting at row {row} (line {line} of the file, the header being line 1): "
            'a field opens with " and no closing " follows; close it, or quote the whole field and double the '
            'quotes inside it ("")')


def _shown(raw: str) -> str:
    """The first 200 characters of a bad row's text, bytes that were not UTF-8 as U+FFFD."""
    return raw[:200].encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _csv_records(lines: Iterator[str], delimiter: str) -> Iterator[tuple[list[str] | None, list[str]]]:
    """Each record of CSV text ``lines`` (Python's ``csv``) with the lines it took. A quoted field that is never
    closed takes every line after it: that record is (None, [its first line]) and the lines after it are read
    again as records of their own."""
    while lines is not None:
        taken: list[str] = []
        last = None
        for fields in csv.reader(_taking(lines, taken), delimiter=delimiter):
            if last is not None:
                yield last
            last = (fields, taken[:])
            taken.clear()
        lines = None
        if last is not None and _open_quote(last[1], delimiter):
            yield None, last[1][:1]
            lines = iter(last[1][1:])
        elif last is not None:
            yield last


def _taking(lines: Iterator[str], taken: list[str]) -> Iterator[str]:
    """``lines``, each appended to ``taken`` as it is read."""
    for line in lines:
        taken.append(line)
        yield line


def _open_quote(lines: list[str], delimiter: str) -> bool:
    """Do a record's ``lines`` end inside a quoted field (its closing quote missing)? Then a line added after
    them is read into the same record."""
    return len(list(csv.reader([*lines, "\n"], delimiter=delimiter))) == 1


def _parquet_blocks(path: Path, part: int = 0, parts: int = 1) -> Iterator[Block]:
    """The file's rows (or those of row groups [part * G / parts, (part + 1) * G / parts) of its G), rows numbered
    from 0."""
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    rows = max(1, meta.num_rows * BLOCK_BYTES // max(1, size)) if meta.num_rows else 1
    if meta.num_rows == 0:
        yield from _numbered([pf.schema_arrow.empty_table()])
        return
    groups = range(meta.num_row_groups)[part * meta.num_row_groups // parts:(part + 1) * meta.num_row_groups // parts]
    if groups:
        yield from _numbered(pf.iter_batches(batch_size=rows, row_groups=list(groups)))


def _ipc_blocks(path: Path, kind: str, part: int = 0, parts: int = 1) -> Iterator[Block]:
    """The rows of an Arrow file or ``save_to_disk`` directory (or rows [part * N / parts, (part + 1) * N / parts)
    of its N), memory-mapped: only the pages of the block at hand are read. Rows numbered from 0."""
    if kind == "hf":
        state = path / "state.json"
        if not state.exists():
            raise InputError(f"{path}: looks like a DatasetDict; point the input at one split's directory")
        files = [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        tables = [ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files]
        table = pa.concat_tables(tables)
    else:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        source = pa.memory_map(str(path))
        table = (ipc.open_file(source) if magic == b"ARROW1" else ipc.open_stream(source)).read_all()
    if parts > 1:
        start = part * table.num_rows // parts
        table = table.slice(start, (part + 1) * table.num_rows // parts - start)
    yield from _slices(table, [])


# -- the whole-file path ---------------------------------------------------------------------------


def read_table(path: Path) -> tuple[pa.Table, list[BadRow]]:
    """A JSONL file at once: Arrow's reader, else line by line (rows of mixed types, per-row errors);
    ``FILE_ROW`` holds each row's line."""
    try:  # a well-formed file with consistent types and valid UTF-8
        table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=1 << 26))
        table.validate(full=True)
        return _with_file_rows(table, _file_lines(path, table.num_rows), path), []
    except pa.ArrowInvalid:
        pass
    rows, bad = [], []
    for i, line in enumerate(_jsonl_lines(path)):
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
        if "\\ud" in text.lower() and (why := _lone_surrogate(obj)):
            bad.append(BadRow(i, text[:200], why))
            continue
        rows.append((i, obj))
    return _rows_to_table(rows, path), bad


def _file_lines(path: Path, n_rows: int) -> pa.Array:
    """The line of each of the ``n_rows`` rows Arrow's reader parsed from the whole file (as ``_row_lines``)."""
    lines = [line + _filled_lines(chunk, ends) for line, chunk, ends in _LineChunks(path)]
    found = np.concatenate(lines) if lines else np.zeros(0, np.int64)
    if len(found) != n_rows:
        raise pa.ArrowInvalid(f"{len(found)} non-blank line(s) hold {n_rows} JSON value(s), expected one per line")
    return pa.array(found, pa.int64())


def _jsonl_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as ``_line_ends`` cuts them (the last ``\\n`` of each kept), without a leading BOM (as
    Arrow's reader reads it)."""
    for i, line in enumerate(input_lines(path)):
        yield from _LONE_CR.split(line.removeprefix(BOM) if i == 0 else line)


def _lone_surrogate(obj: dict) -> str | None:
    """Why a parsed row cannot be text: a ``\\ud800``-style escape that is half of a UTF-16 pair alone."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"invalid Unicode: a lone surrogate escape (\\u{ord(exc.object[exc.start]):04x}) is not a "
                "character; fix the escape or remove it")
    return None


def _rows_to_table(rows: list[tuple[int, dict]], where: Path) -> pa.Table:
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
    return _with_file_rows(pa.table(cols), [i for i, _ in rows], where)


def _mixed(values: list) -> pa.Array:
    """A column whose rows have different JSON types (Arrow cannot hold it as one type).

    Strings stay strings; other values become ``MIXED_TAG + typename + ":" + json`` so the
    adapter can report the row's real type.
    """
    out = [v if v is None or isinstance(v, str) else f"{MIXED_TAG}{type(v).__name__}:{json.dumps(v)}" for v in values]
    return pa.array(out, pa.string())


def _json_values(text: str) -> object:
    """The JSON value ``text`` holds, or the list of the objects it holds one after another (``{...} {...}``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if not exc.msg.startswith("Extra data") or not text.lstrip().startswith("{"):
            raise
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := _JSON_SPACE.match(text, at).end()) < len(text):
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def _read_json_array(path: Path) -> tuple[pa.Table, list[BadRow]]:
    """The rows of a JSON array of objects, or of JSON objects one after another (a row each)."""
    try:
        with open_input(path) as fh:
            text = fh.read().decode("utf-8-sig")
        data = _json_values(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid UTF-8 JSON ({exc}); use JSONL for row-level error recovery") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of objects, or JSON objects one after another")
    escapes = "\\ud" in text.lower()  # a lone surrogate is possible
    good, bad = [], []
    for i, obj in enumerate(data):
        why = "not a JSON object" if not isinstance(obj, dict) else (_lone_surrogate(obj) if escapes else None)
        if why:
            bad.append(BadRow(i, json.dumps(obj)[:200], why))
        else:
            good.append((i, obj))
    return _rows_to_table(good, path), bad
