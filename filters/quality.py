"""``quality``: length and format statistics, and duplicate marking on normalised text.

Columns: ``char_len`` (prompt + response characters: Unicode code points), ``prompt_chars``, ``response_chars``,
``total_chars`` (of a conversation, the characters of every turn, system turns included: what a trainer's context
must hold; else ``char_len``), ``word_count`` (whitespace-separated words of prompt + response; a script written
without spaces, such as Chinese, Japanese or Thai, counts a run of it as one word), ``line_count`` (lines of the
response, as ``str.splitlines`` counts ``\n``, ``\r\n`` and ``\r`` breaks: a final line break ends a line, it does
not start one), ``has_list`` (a bulleted or numbered line), ``has_code`` (a fenced block: a line opening with three
backticks or ``~~~``), ``has_math`` (digits joined by an arithmetic operator on one line: a loose proxy that dates
and ranges such as ``2024-01-15`` also meet), ``norm_hash`` (sha1 of the folded prompt and response, or of every
turn of a conversation, so conversations that end alike are not duplicates; with a preference pair's ``rejected``
answer) and ``is_duplicate`` (an earlier row, in input order, has the same ``norm_hash``). Of a conversation, the lengths, counts and ``has_*`` read the final exchange
(its last prompt and response); ``total_chars`` and ``norm_hash`` read every turn.

Folded text: lower-cased, every whitespace run one space, none at the ends of a part (the prompt, the response, a
turn), parts kept apart (``Say: hello`` / ``world`` and ``Say:`` / ``hello world`` differ). Global scope so
duplicates are found across shards; the statistics are computed per shard on the workers (``map_shard``),
duplicates once (``reduce``, on 16 bytes a row: ``norm_hash`` and the input position as integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.samples import preference_text
from curator.stage import Resources, Stage
from curator.strings import (
    buffers,
    count_per_row,
    fold_lower,
    hex_digests,
    hex_to_uint64,
    rows_of,
    text_buffers,
)
from curator.turns import conversation_text, turn_offsets

LIST_LINE = r"(?m)^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]+\S"
MATH = r"\d[ \t]*[-+*/×÷^=][ \t]*\d"
FENCE = r"(?m)^[ \t]{0,3}(?:```|~~~)"
SEP = "\x00"  # joins the parts of a row's text: normalize strips C0 controls, so no text holds it
POSITION = ("_input_idx", "_input_row")
SLICE_BYTES = 4 << 20  # text bytes per row_stats call: its byte-level temporaries are ~15x the text


@dataclass(frozen=True)
class QualityParams:
    mark_duplicates: bool = True


def _normalised(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(``norm_hash``, ``word_count``) of each text (parts joined by ``SEP``): the hash of the folded text
    (``fold_lower``), and its words: its spaces plus its non-empty parts."""
    norm = fold_lower(text, ord(SEP))
    data, offsets = buffers(norm)
    seps = np.flatnonzero(data == 0)
    starts = np.concatenate([offsets[:-1], seps + 1])  # where each part begins (a row's first, after each SEP)
    owner = np.concatenate([np.arange(len(norm)), rows_of(seps, offsets)])
    full = starts < offsets[1:][owner]  # the part has a byte, and it is not SEP (parts never start with a space)
    full[full] = data[starts[full]] != 0
    parts = np.bincount(owner[full], minlength=len(norm))
    return hex_digests(norm, "sha1", 16), pa.array(count_per_row(data == 32, offsets) + parts)


def _line_count(response: pa.Array) -> pa.Array:
    """Lines per text as ``str.splitlines`` counts them for ``\\n``, ``\\r\\n`` and ``\\r`` (0 for an empty one)."""
    data, offsets = text_buffers(response)
    cr = np.flatnonzero(data == 13)  # rare
    lone_cr = cr[(cr + 1 >= len(data)) | (data[np.minimum(cr + 1, len(data) - 1)] != 10)]
    breaks = np.bincount(rows_of(np.concatenate([np.flatnonzero(data == 10), lone_cr]), offsets),
                         minlength=len(response))
    filled = offsets[1:] > offsets[:-1]
    unterminated = np.zeros(len(response), np.int64)
    last = data[offsets[1:][filled] - 1]
    unterminated[filled] = (last != 10) & (last != 13)
    return pa.array(breaks + unterminated)


def _has_code(response: pa.Array) -> pa.Array:
    """Does the text hold a code fence (``FENCE``)? Searched only in rows with a backtick or a tilde."""
    data, offsets = buffers(response)
    marked = np.zeros(len(response), np.bool_)
    marked[rows_of(np.flatnonzero(data == 0x60), offsets)] = True
    marked[rows_of(np.flatnonzero(data == 0x7E), offsets)] = True
    if not marked.any():
        return pa.array(marked)
    marked = pa.array(marked)
    return pc.replace_with_mask(marked, marked, pc.match_substring_regex(response.filter(marked), FENCE))


def row_stats(table: pa.Table) -> pa.Table:
    """Every per-row column (all but ``is_duplicate``) for a batch of rows."""
    prompt = pc.fill_null(table.column("prompt"), "").combine_chunks()
    response = pc.fill_null(table.column("response"), "").combine_chunks()
    text = pc.binary_join_element_wise(prompt, response, SEP)
    p_len, r_len = pc.utf8_length(prompt), pc.utf8_length(response)
    norm_hash, word_count = _normalised(text)
    if "rejected" in table.column_names:  # a preference pair: its rejected answer is part of what repeats
        norm_hash = _normalised(pc.binary_join_element_wise(text, preference_text(table.column("rejected")), SEP))[0]
    char_len = pc.add(p_len, r_len).cast(pa.int64())
    total_chars = char_len
    if "messages" in table.column_names and table.column("messages").null_count < table.num_rows:
        messages = table.column("messages").combine_chunks()
        exchange = np.where(pc.is_valid(table.column("response")).to_numpy(zero_copy_only=False), 2, 1)
        offsets = turn_offsets(messages)
        longer = np.diff(offsets) > exchange  # turns before the last user turn (and its answer)
        if longer.any():
            mask = pa.array(longer)
            whole = conversation_text(messages.filter(mask), SEP)
            norm_hash = pc.replace_with_mask(norm_hash, mask, _normalised(whole)[0])
            turn_chars = pc.fill_null(pc.utf8_length(pc.struct_field(pc.list_flatten(messages), "content")), 0)
            sums = np.add.reduceat(np.append(turn_chars.to_numpy().astype(np.int64), 0), offsets[:-1])
            sums[offsets[:-1] == offsets[1:]] = 0  # (reduceat gives the next value for an empty row)
            total_chars = pc.replace_with_mask(char_len, mask, pa.array(sums[longer], pa.int64()))
    return pa.table({
        "sample_id": table.column("sample_id"),
        "char_len": char_len,
        "prompt_chars": p_len.cast(pa.int64()),
        "response_chars": r_len.cast(pa.int64()),
        "total_chars": total_chars,
        "word_count": word_count,
        "line_count": _line_count(response),
        "has_list": pc.match_substring_regex(response, LIST_LINE),
        "has_code": _has_code(response),
        "has_math": pc.match_substring_regex(text, MATH),
        "norm_hash": norm_hash,
    })


def _sliced_row_stats(table: pa.Table) -> pa.Table:
    """``row_stats`` over slices of about ``SLICE_BYTES`` of text (same result, one chunk per column): a
    bounded working set whatever the batch size."""
    size = sum(table.column(c).nbytes for c in ("prompt", "response", "messages", "rejected") if c in table.column_names)
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
    version = 4  # 2: a conversation's norm_hash covers every turn; 3: folded parts, word/line counts, fences;
    # 4: total_chars
    Params = QualityParams
    requires = ("sample_id", "prompt", "response", "messages")
    provides = ("char_len", "prompt_chars", "response_chars", "total_chars", "word_count", "line_count", "has_list",
                "has_code", "has_math", "norm_hash", "is_duplicate")

    def resources(self) -> Resources:
        return Resources(batch_size=1 << 40)  # one batch: duplicates need the whole set

    def view_columns(self, available: list[str]) -> list[str]:
        return [c for c in available if c in self.requires or c == "rejected"]

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        stats = self.map_shard(table)
        added = self.reduce(stats.select([c for c in self.reduce_columns if c in stats.column_names]))
        stats = stats.drop_columns([c for c in stats.column_names if c.startswith("_")])
        return stats.append_column("is_duplicate", added.column("is_duplicate"))

    def map_shard(self, view: pa.Table) -> pa.Table:
        """Row statistics, plus what orders duplicates: ``_norm_key`` (``norm_hash`` as an integer) and
        ``_position`` (input index << 40 | input row), if the view has the input position."""
        stats = _sliced_row_stats(view.select(self.view_columns(view.column_names)))
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
