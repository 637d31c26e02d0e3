"""``quality``: length and format statistics, and duplicate marking on normalised text.

Columns: ``char_len`` (prompt + response characters), ``prompt_chars``, ``response_chars``,
``word_count``, ``line_count``, ``has_list`` (a bulleted or numbered line), ``has_code`` (a
fenced block), ``has_math`` (digits joined by an arithmetic operator), ``norm_hash`` (sha1 of
lower-cased, whitespace-collapsed prompt + response) and ``is_duplicate`` (an earlier row, in
input order, has the same ``norm_hash``). Global scope so duplicates are found across shards;
the statistics are computed per shard on the workers (``map_shard``), duplicates once (``reduce``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.parallel import map_chunks
from curator.samples import later_repeats
from curator.stage import Resources, Stage

LIST_LINE = r"(?m)^\s*(?:[-*•+]|\d{1,3}[.)])\s+\S"
MATH = r"\d\s*[-+*/×÷^=]\s*\d"


@dataclass(frozen=True)
class QualityParams:
    mark_duplicates: bool = True


def _normalised(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(``norm_hash``, ``word_count``) as defined by Arrow: ``utf8_split_whitespace`` (a leading
    whitespace run gives an empty word, a trailing one one or two), join with spaces, lower-case, sha1.

    Rows that are ASCII with a non-space character take an equal, faster Python path (on ASCII,
    ``str.split`` and ``utf8_split_whitespace`` agree on what is whitespace)."""
    fast = pc.and_(pc.and_(pc.string_is_ascii(text), pc.invert(pc.utf8_is_space(text))),
                   pc.greater(pc.binary_length(text), 0))
    hashes, counts = [], []
    for t in text.filter(fast).to_pylist():
        words = t.split()
        norm, n = " ".join(words), len(words)
        if t[0].isspace():
            norm, n = " " + norm, n + 1
        if t[-1].isspace():  # Arrow's quirk: a trailing run of two or more gives two empty words
            tail = 2 if t[-2].isspace() else 1
            norm, n = norm + " " * tail, n + tail
        counts.append(n)
        hashes.append(hashlib.sha1(norm.lower().encode()).hexdigest()[:16])
    if len(hashes) == len(text):
        return pa.array(hashes, pa.string()), pa.array(counts, pa.int64())
    slow = pc.invert(fast)
    words = pc.utf8_split_whitespace(text.filter(slow))
    norm = pc.utf8_lower(pc.binary_join(words, " "))
    slow_hashes = [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest()[:16] for t in norm.to_pylist()]
    out_h, out_c = pa.nulls(len(text), pa.string()), pa.nulls(len(text), pa.int64())
    out_h = pc.replace_with_mask(pc.replace_with_mask(out_h, fast, pa.array(hashes, pa.string())), slow,
                                 pa.array(slow_hashes, pa.string()))
    out_c = pc.replace_with_mask(pc.replace_with_mask(out_c, fast, pa.array(counts, pa.int64())), slow,
                                 pc.list_value_length(words).cast(pa.int64()))
    return out_h, out_c


def _row_stats(table: pa.Table) -> pa.Table:
    """Every per-row column (all but ``is_duplicate``) for a chunk of rows."""
    prompt = pc.fill_null(table.column("prompt"), "").combine_chunks()
    response = pc.fill_null(table.column("response"), "").combine_chunks()
    text = pc.binary_join_element_wise(prompt, response, "\n")
    p_len, r_len = pc.utf8_length(prompt), pc.utf8_length(response)
    hashes, word_count = _normalised(text)
    return pa.table({
        "sample_id": table.column("sample_id"),
        "char_len": pc.add(p_len, r_len).cast(pa.int64()),
        "prompt_chars": p_len.cast(pa.int64()),
        "response_chars": r_len.cast(pa.int64()),
        "word_count": word_count,
        "line_count": pc.add(pc.count_substring(response, "\n"), 1).cast(pa.int64()),
        "has_list": pc.match_substring_regex(response, LIST_LINE),
        "has_code": pc.match_substring(response, "```"),
        "has_math": pc.match_substring_regex(text, MATH),
        "norm_hash": hashes,
    })


class QualityStage(Stage):
    name = "quality"
    kind = "score"
    scope = "global"
    map_reduce = True  # per-row statistics per shard on the workers; duplicates once, globally
    version = 1
    Params = QualityParams
    requires = ("sample_id", "prompt", "response")
    provides = ("char_len", "prompt_chars", "response_chars", "word_count", "line_count", "has_list",
                "has_code", "has_math", "norm_hash", "is_duplicate")

    def resources(self) -> Resources:
        return Resources(batch_size=1 << 40)  # one batch: duplicates need the whole set

    def view_columns(self, available: list[str]) -> list[str]:
        return [c for c in available if c in self.requires]

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        return self.reduce(self.map_shard(table))

    def map_shard(self, view: pa.Table) -> pa.Table:
        """Row statistics, plus the input position (if known) that orders duplicates."""
        stats = map_chunks(_row_stats, view.select(["sample_id", "prompt", "response"]))
        for col in ("_input_idx", "_input_row"):
            if col in view.column_names:
                stats = stats.append_column(col, view.column(col))
        return stats

    def reduce(self, parts: pa.RecordBatch | pa.Table) -> pa.Table:
        parts = parts if isinstance(parts, pa.Table) else pa.Table.from_batches([parts])
        position = [c for c in ("_input_idx", "_input_row") if c in parts.column_names]
        if self.params.mark_duplicates:
            hashes = parts.column("norm_hash").combine_chunks()
            dup = later_repeats(hashes, parts.select(position) if len(position) == 2 else None)
        else:
            dup = pa.array(np.zeros(parts.num_rows, np.bool_))
        return parts.drop_columns(position).append_column("is_duplicate", dup)
