"""``quality``: length and format statistics, and duplicate marking on normalised text.

Columns: ``char_len`` (prompt + response characters), ``prompt_chars``, ``response_chars``,
``word_count``, ``line_count``, ``has_list`` (a bulleted or numbered line), ``has_code`` (a
fenced block), ``has_math`` (digits joined by an arithmetic operator), ``norm_hash`` (sha1 of
lower-cased, whitespace-collapsed prompt + response, or of every turn of a conversation, so conversations
that end alike are not duplicates) and ``is_duplicate`` (an earlier row, in input order, has the same
``norm_hash``). Global scope so duplicates are found across shards;
the statistics are computed per shard on the workers (``map_shard``), duplicates once (``reduce``,
on 16 bytes a row: ``norm_hash`` and the input position as integers).

"Whitespace-collapsed" and ``word_count`` follow Arrow's ``utf8_split_whitespace`` + ``binary_join``:
a leading whitespace run gives an empty word, a trailing one one empty word, or two if it holds two or
more characters (``curator.strings.split_join_lower``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.stage import Resources, Stage
from curator.strings import (
    buffers,
    count_byte,
    count_per_row,
    hex_digests,
    hex_to_uint64,
    rows_of,
    split_join_lower,
)
from curator.turns import conversation_text, turn_offsets

LIST_LINE = r"(?m)^\s*(?:[-*•+]|\d{1,3}[.)])\s+\S"
MATH = r"\d\s*[-+*/×÷^=]\s*\d"
POSITION = ("_input_idx", "_input_row")
SLICE_BYTES = 4 << 20  # text bytes per row_stats call: its byte-level temporaries are ~15x the text


@dataclass(frozen=True)
class QualityParams:
    mark_duplicates: bool = True


def _normalised(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(``norm_hash``, ``word_count``) of each text: the number of words is one more than the number of
    spaces in the whitespace-collapsed text."""
    norm = split_join_lower(text)
    data, offsets = buffers(norm)
    return hex_digests(norm, "sha1", 16), pa.array(count_per_row(data == 32, offsets) + 1)


def _has_code(response: pa.Array) -> pa.Array:
    """Does the text hold a code fence? Searched only in rows with a backtick."""
    data, offsets = buffers(response)
    tick = np.zeros(len(response), np.bool_)
    tick[rows_of(np.flatnonzero(data == 0x60), offsets)] = True
    if not tick.any():
        return pa.array(tick)
    tick = pa.array(tick)
    return pc.replace_with_mask(tick, tick, pc.match_substring(response.filter(tick), "```"))


def row_stats(table: pa.Table) -> pa.Table:
    """Every per-row column (all but ``is_duplicate``) for a batch of rows."""
    prompt = pc.fill_null(table.column("prompt"), "").combine_chunks()
    response = pc.fill_null(table.column("response"), "").combine_chunks()
    text = pc.binary_join_element_wise(prompt, response, "\n")
    p_len, r_len = pc.utf8_length(prompt), pc.utf8_length(response)
    norm_hash, word_count = _normalised(text)
    if "messages" in table.column_names and table.column("messages").null_count < table.num_rows:
        messages = table.column("messages").combine_chunks()
        exchange = np.where(pc.is_valid(table.column("response")).to_numpy(zero_copy_only=False), 2, 1)
        longer = np.diff(turn_offsets(messages)) > exchange  # turns before the last user turn (and its answer)
        if longer.any():
            mask = pa.array(longer)
            whole = conversation_text(messages.filter(mask), "\n")
            norm_hash = pc.replace_with_mask(norm_hash, mask, _normalised(whole)[0])
    return pa.table({
        "sample_id": table.column("sample_id"),
        "char_len": pc.add(p_len, r_len).cast(pa.int64()),
        "prompt_chars": p_len.cast(pa.int64()),
        "response_chars": r_len.cast(pa.int64()),
        "word_count": word_count,
        "line_count": pa.array(count_byte(response, 10) + 1),
        "has_list": pc.match_substring_regex(response, LIST_LINE),
        "has_code": _has_code(response),
        "has_math": pc.match_substring_regex(text, MATH),
        "norm_hash": norm_hash,
    })


def _sliced_row_stats(table: pa.Table) -> pa.Table:
    """``row_stats`` over slices of about ``SLICE_BYTES`` of text (same result, one chunk per column): a
    bounded working set whatever the batch size."""
    size = sum(table.column(c).nbytes for c in ("prompt", "response", "messages") if c in table.column_names)
    step = max(1, table.num_rows * SLICE_BYTES // max(1, size))
    if table.num_rows <= step:
        return row_stats(table)
    return pa.concat_tables([row_stats(table.slice(at, step)) for at in range(0, table.num_rows, step)]).combine_chunks()


class QualityStage(Stage):
    name = "quality"
    kind = "score"
    scope = "global"
    map_reduce = True  # per-row statistics per shard on the workers; duplicates once, globally
    reduce_columns = ("_norm_key", "_position")  # 16 bytes a row: norm_hash and input position as integers
    version = 2  # 2: a conversation's norm_hash covers every turn
    Params = QualityParams
    requires = ("sample_id", "prompt", "response", "messages")
    provides = ("char_len", "prompt_chars", "response_chars", "word_count", "line_count", "has_list",
                "has_code", "has_math", "norm_hash", "is_duplicate")

    def resources(self) -> Resources:
        return Resources(batch_size=1 << 40)  # one batch: duplicates need the whole set

    def view_columns(self, available: list[str]) -> list[str]:
        return [c for c in available if c in self.requires]

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        stats = self.map_shard(table)
        added = self.reduce(stats.select([c for c in self.reduce_columns if c in stats.column_names]))
        stats = stats.drop_columns([c for c in stats.column_names if c.startswith("_")])
        return stats.append_column("is_duplicate", added.column("is_duplicate"))

    def map_shard(self, view: pa.Table) -> pa.Table:
        """Row statistics, plus what orders duplicates: ``_norm_key`` (``norm_hash`` as an integer) and
        ``_position`` (input index << 40 | input row), if the view has the input position."""
        stats = _sliced_row_stats(view.select([c for c in self.requires if c in view.column_names]))
        stats = stats.append_column("_norm_key", hex_to_uint64(stats.column("norm_hash")))
        if all(c in view.column_names for c in POSITION):
            idx, row = (pc.cast(view.column(c), pa.int64()) for c in POSITION)
            stats = stats.append_column("_position", pc.bit_wise_or(pc.shift_left(idx, 40), row))
        return stats

    def reduce(self, parts: pa.Table) -> pa.Table:
        """``is_duplicate`` for every row of ``parts``: an earlier row (by ``_position`` if given, else by
        row number) has the same ``_norm_key``."""
        dup = np.zeros(parts.num_rows, np.bool_)
        if self.params.mark_duplicates and parts.num_rows:
            key = parts.column("_norm_key").to_numpy()
            pos = (parts.column("_position").to_numpy() if "_position" in parts.column_names
                   else np.arange(parts.num_rows))
            for part in range(16):  # by the key's top 4 bits: the sort's memory is a sixteenth of the rows
                rows = np.flatnonzero((key >> np.uint64(60)) == part)
                order = np.lexsort((pos[rows], key[rows]))
                ranked = key[rows][order]
                dup[rows[order[1:][ranked[1:] == ranked[:-1]]]] = True
        return pa.table({"is_duplicate": pa.array(dup)})
