"""Byte-level kernels over Arrow string buffers (numpy, no per-row Python): what ingest, normalize and
quality need beyond ``pyarrow.compute``. UTF-8 never encodes a code point below U+0080 inside a multi-byte
sequence, so an ASCII byte test is a character test.

``fold_lower(arr)`` is per row ``utf8_lower(" ".join(text.split()))``, part by part (whitespace is Python's
``str.isspace`` set); ``hex_digests(arr, algo, n)`` is
``hashlib.<algo>(value).hexdigest()[:n]`` per value.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
ASCII_SPACE = np.zeros(256, np.bool_)
ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
# Multi-byte whitespace (U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000) by lead byte
WIDE_SPACE = {0xC2: [b"\xc2\x85", b"\xc2\xa0"], 0xE1: [b"\xe1\x9a\x80"],
              0xE2: [bytes([0xE2, 0x80, c]) for c in (*range(0x80, 0x8B), 0xA8, 0xA9, 0xAF)] + [b"\xe2\x81\x9f"],
              0xE3: [b"\xe3\x80\x80"]}


def buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, offsets) of a string array, offsets relative to ``data``; null slots read as empty only
    if the array was null-filled first."""
    if pa.types.is_large_string(arr.type):
        offsets = np.frombuffer(arr.buffers()[1], np.int64, len(arr) + 1, arr.offset * 8)
    else:
        offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4).astype(np.int64)
    raw = arr.buffers()[2]
    data = np.frombuffer(raw, np.uint8) if raw is not None else np.zeros(0, np.uint8)
    return data[offsets[0]:offsets[-1]], offsets - offsets[0]


def from_buffers(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A (non-null) string array from bytes and int64 offsets."""
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(pa.string(), len(offsets) - 1,
                                     [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
    return pa.Array.from_buffers(pa.large_string(), len(offsets) - 1,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)]).cast(pa.string())


def rows_of(positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The row of each byte position."""
    return np.searchsorted(offsets, positions, side="right") - 1


def _reduce_rows(ufunc: np.ufunc, mask: np.ndarray, offsets: np.ndarray, empty, dtype=None) -> np.ndarray:
    n = len(offsets) - 1
    nonempty = offsets[1:] > offsets[:-1]
    out = np.full(n, empty, dtype or mask.dtype)
    if len(mask):
        out[nonempty] = ufunc.reduceat(mask, offsets[:-1][nonempty], dtype=dtype)
    return out


def any_per_row(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per row: is ``mask`` (one bool per byte) true anywhere in the row?"""
    return _reduce_rows(np.logical_or, mask, offsets, False)


def count_per_row(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per row: how many bytes ``mask`` (one bool per byte) marks (int64). Summed as bytes into uint32 (a row
    holds less than 4 GiB): half the time of summing bools into int64."""
    return _reduce_rows(np.add, mask.view(np.uint8), offsets, 0, np.uint32).astype(np.int64)


def blank(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Null, empty or only whitespace (what ``utf8_trim_whitespace`` would empty, without copying; the kernel
    stops at a row's first other character, so it costs about a row's first bytes)."""
    arr = pc.fill_null(arr, "")
    return pc.or_(pc.equal(pc.binary_length(arr), 0), pc.utf8_is_space(arr))


def text_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``buffers`` of ``arr`` with nulls read as empty strings."""
    return buffers(pc.fill_null(arr, "") if arr.null_count else arr)


def count_byte(arr: pa.Array, byte: int) -> np.ndarray:
    """Occurrences of one ASCII byte per row (int64); nulls count as empty. For bytes that are rare."""
    data, offsets = text_buffers(arr)
    hits = np.flatnonzero(data == byte)
    return np.bincount(rows_of(hits, offsets), minlength=len(arr)).astype(np.int64)


def _wide_spaces(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start positions, byte lengths) of the multi-byte whitespace characters in ``data``."""
    starts, lengths = [], []
    for lead, seqs in WIDE_SPACE.items():
        cand = np.flatnonzero(data == lead)
        if not len(cand):
            continue
        width = len(seqs[0])
        cand = cand[cand + width <= len(data)]
        window = data[cand[:, None] + np.arange(width)]
        hit = np.zeros(len(cand), np.bool_)
        for seq in seqs:
            hit |= np.all(window == np.frombuffer(seq, np.uint8), axis=1)
        starts.append(cand[hit])
        lengths.append(np.full(int(hit.sum()), width, np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(np.concatenate(starts), kind="stable")
    return np.concatenate(starts)[order], np.concatenate(lengths)[order]


def _edge_runs(space: np.ndarray, offsets: np.ndarray, seps: np.ndarray) -> np.ndarray:
    """The positions of the whitespace runs at a part's ends (a row's ends, either side of each of ``seps``),
    found by walking in from each edge (such runs are short and few)."""
    rows = rows_of(seps, offsets)
    filled = offsets[1:] > offsets[:-1]
    found = []
    for step, edges, bounds in ((1, np.concatenate([offsets[:-1][filled], seps + 1]),
                                 np.concatenate([offsets[1:][filled], offsets[1:][rows]])),
                                (-1, np.concatenate([offsets[1:][filled] - 1, seps - 1]),
                                 np.concatenate([offsets[:-1][filled], offsets[:-1][rows]]))):
        while len(edges):
            inside = (edges < bounds) if step == 1 else (edges >= bounds)
            edges, bounds = edges[inside], bounds[inside]
            edges, bounds = edges[space[edges]], bounds[space[edges]]
            found.append(edges)
            edges = edges + step
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def fold_lower(arr: pa.Array, sep: int = 0) -> pa.Array:
    """Lower-cased text with every whitespace run replaced by one space, and none at the ends of a part (a row's
    text between ``sep`` bytes, or its ends): per part, ``" ".join(part.split())``, parts joined by ``sep``, then
    Arrow's ``utf8_lower``. Nulls read as empty strings."""
    data, offsets = text_buffers(arr)
    ascii_only = pc.all(pc.string_is_ascii(arr)).as_py() is not False
    low = np.flatnonzero(data < 32)  # rare but for newlines and tabs: fix them up one by one
    space = data <= 32  # every byte of a whitespace character, once the low non-spaces are cleared
    space[low[~ASCII_SPACE[data[low]]]] = False
    out = data.copy()
    out[low[ASCII_SPACE[data[low]]]] = 32
    start, wide = space, np.zeros(0, np.int64)  # start: first byte of a whitespace character
    if not ascii_only:
        wide, width = _wide_spaces(data)
        start = space.copy()
        for k in range(3):
            space[wide[width > k] + k] = True
        start[wide] = True
        out[wide] = 32
    prev_space = np.empty(len(data), np.bool_)
    prev_space[:1] = False
    prev_space[1:] = space[:-1]
    prev_space[offsets[1:-1][offsets[1:-1] < len(data)]] = False  # runs stop at row ends
    drop = space & prev_space if start is space else space & ~(start & ~prev_space)  # all but a run's first char
    drop[_edge_runs(space, offsets, low[data[low] == sep])] = True
    removed = np.flatnonzero(drop)
    if len(removed):
        out = np.delete(out, removed)
        offsets = offsets - np.searchsorted(removed, offsets)
    result = pc.ascii_lower(from_buffers(out, offsets))
    if not ascii_only:
        non_ascii = pc.invert(pc.string_is_ascii(result))
        result = pc.replace_with_mask(result, non_ascii, pc.utf8_lower(result.filter(non_ascii)))
    return result


def hex_to_uint64(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """16-digit lower-case hex strings as the integers they spell."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    data, _ = buffers(arr)
    digits = _HEX_VALUE[data.reshape(len(arr), 16)].astype(np.uint64)
    return pa.array((digits << (4 * np.arange(15, -1, -1, dtype=np.uint64))).sum(axis=1, dtype=np.uint64))


_HEX_VALUE = np.zeros(256, np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)


def hex_digests(arr: pa.Array, algo: str = "sha256", chars: int = 64) -> pa.Array:
    """``hashlib.new(algo, value).hexdigest()[:chars]`` of every value of a non-null string array."""
    if len(arr) == 0:
        return pa.array([], pa.string())
    data, offsets = buffers(arr)
    mem = memoryview(data)
    new = getattr(hashlib, algo)
    bounds = offsets.tolist()
    digest = np.frombuffer(b"".join([new(mem[a:b]).digest() for a, b in zip(bounds, bounds[1:])]), np.uint8)
    size = new().digest_size
    digest = digest.reshape(-1, size)[:, : (chars + 1) // 2].ravel()
    hexed = np.empty(digest.size * 2, np.uint8)
    hexed[0::2], hexed[1::2] = HEX[digest >> 4], HEX[digest & 15]
    hexed = hexed.reshape(len(arr), -1)[:, :chars].ravel()
    return from_buffers(hexed, np.arange(0, len(arr) + 1, dtype=np.int64) * chars)
