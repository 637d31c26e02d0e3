"""``quality``: length and format statistics, and duplicate marking on normalised text.

Columns: ``char_len`` (prompt + response characters), ``prompt_chars``, ``response_chars``,
``word_count``, ``line_count``, ``has_list`` (a bulleted or numbered line), ``has_code`` (a
fenced block), ``has_math`` (digits joined by an arithmetic operator), ``norm_hash`` (sha1 of
lower-cased, whitespace-collapsed prompt + response) and ``is_duplicate`` (an earlier row, in
input order, has the same ``norm_hash``). Global scope so duplicates are found across shards.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curator.parallel import map_chunks
from curator.stage import Resources, Stage

LIST_LINE = r"(?m)^\s*(?:[-*•+]|\d{1,3}[.)])\s+\S"
MATH = r"\d\s*[-+*/×÷^=]\s*\d"


@dataclass(frozen=True)
class QualityParams:
    mark_duplicates: bool = True


def _row_stats(table: pa.Table) -> pa.Table:
    """Every per-row column (all but ``is_duplicate``) for a chunk of rows."""
    prompt = pc.fill_null(table.column("prompt"), "")
    response = pc.fill_null(table.column("response"), "")
    text = pc.binary_join_element_wise(prompt, response, "\n")
    p_len, r_len = pc.utf8_length(prompt), pc.utf8_length(response)
    words = pc.utf8_split_whitespace(text)
    norm = pc.utf8_lower(pc.binary_join(words, " "))
    hashes = [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest()[:16] for t in norm.to_pylist()]
    return pa.table({
        "sample_id": table.column("sample_id"),
        "char_len": pc.add(p_len, r_len).cast(pa.int64()),
        "prompt_chars": p_len.cast(pa.int64()),
        "response_chars": r_len.cast(pa.int64()),
        "word_count": pc.list_value_length(words).cast(pa.int64()),
        "line_count": pc.add(pc.count_substring(response, "\n"), 1).cast(pa.int64()),
        "has_list": pc.match_substring_regex(response, LIST_LINE),
        "has_code": pc.match_substring(response, "```"),
        "has_math": pc.match_substring_regex(text, MATH),
        "norm_hash": pa.array(hashes, pa.string()),
    })


class QualityStage(Stage):
    name = "quality"
    kind = "score"
    scope = "global"
    version = 1
    Params = QualityParams
    requires = ("sample_id", "prompt", "response")
    provides = ("char_len", "prompt_chars", "response_chars", "word_count", "line_count", "has_list",
                "has_code", "has_math", "norm_hash", "is_duplicate")

    def resources(self) -> Resources:
        return Resources(batch_size=1 << 40)  # one batch: duplicates need the whole set

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        stats = map_chunks(_row_stats, table.select(["sample_id", "prompt", "response"]))
        dup = self._duplicates(table, stats.column("norm_hash").to_pylist())
        return stats.append_column("is_duplicate", dup)

    def _duplicates(self, batch: pa.RecordBatch | pa.Table, hashes: list[str]) -> pa.Array:
        if not self.params.mark_duplicates:
            return pa.array([False] * len(hashes))
        cols = batch.schema.names
        if "_input_idx" in cols:
            order = pc.sort_indices(pa.table({"a": batch.column("_input_idx"), "b": batch.column("_input_row")}),
                                    [("a", "ascending"), ("b", "ascending")]).to_pylist()
        else:
            order = range(len(hashes))
        seen: set[str] = set()
        dup = [False] * len(hashes)
        for i in order:
            dup[i] = hashes[i] in seen
            seen.add(hashes[i])
        return pa.array(dup, pa.bool_())
