"""``normalize``: canonicalise text and reject rows that cannot be trained on (runs at ingest).

Text (prompt, response and every turn of a conversation) is Unicode NFC with C0 control characters (except
tab, newline, carriage return) removed, and invisible characters (``INVISIBLE``: C1 controls, soft hyphens,
zero-width spaces, word joiners, byte-order marks) with them; a text left with nothing visible counts as empty.
A row is bad (quarantined, or the run fails with ``on_bad_row: fail``, enforced by the
ingest for reader errors too) when its response is null/empty (unless ``require_response`` is
false, or the input is in the ``prompts`` layout: prompts without responses, probe rows), its prompt
is empty, null or absent (for layouts with a prompt: the adapter, ``curator.samples.adapt``, marks null ones), its
messages are malformed (a user or assistant turn without text among them), or its text exceeds ``max_chars``.
Exact duplicates are dropped after the first (by the engine); with ``dedupe: false`` every copy is kept as a
sample of its own (a later copy's ``sample_id`` holds its position: ``curator.samples.own_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.samples import PROMPTS_ONLY
from curator.stage import Stage
from curator.strings import blank, rows_of, text_buffers
from curator.turns import per_row_any, turn_chars, turn_offsets, with_contents

CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
# Invisible characters that only get in the way of training and duplicate finding: C1 controls (but NEL, a line
# break), the soft hyphen, the zero-width space, the word joiner and a byte-order mark inside text. (Joiners that
# shape text, U+200C/U+200D in emoji sequences and Indic or Persian words, are kept.)
INVISIBLE = r"[\x{80}-\x{84}\x{86}-\x{9f}\x{ad}\x{200b}\x{2060}\x{feff}]"
_CONTROL = np.zeros(256, np.bool_)  # the same characters, by byte (UTF-8 never encodes them otherwise)
_CONTROL[[*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]] = True


@dataclass(frozen=True)
class NormalizeParams:
    max_chars: int = 200_000
    on_bad_row: Literal["quarantine", "fail"] = "quarantine"
    dedupe: bool = True
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    strip_control: bool = True
    require_response: bool = True  # false for prompt-only sets (safety prompts for hardness)

    def validate(self) -> None:
        if self.max_chars < 1:
            raise ValueError("max_chars: must be >= 1")


def _clean(arr: pa.Array, params: NormalizeParams) -> pa.Array:
    """Normalise and strip; kernels run only on the rows that can change (ASCII is NFC already; control
    characters are found by byte)."""
    non_ascii = pc.invert(pc.fill_null(pc.string_is_ascii(arr), True))
    wide = pc.any(non_ascii).as_py()
    if params.unicode_form != "none" and wide:
        arr = pc.replace_with_mask(arr, non_ascii, pc.utf8_normalize(arr.filter(non_ascii), params.unicode_form))
    if params.strip_control and wide:
        hidden = pc.replace_with_mask(non_ascii, non_ascii, pc.match_substring_regex(arr.filter(non_ascii), INVISIBLE))
        if pc.any(hidden).as_py():
            arr = pc.replace_with_mask(arr, hidden, pc.replace_substring_regex(arr.filter(hidden), INVISIBLE, ""))
    if params.strip_control:
        data, offsets = text_buffers(arr)
        low = np.flatnonzero((data < 0x20) | (data == 0x7F))
        hits = low[_CONTROL[data[low]]]
        if len(hits):
            has = np.zeros(len(arr), np.bool_)
            has[rows_of(hits, offsets)] = True
            has = pa.array(has)
            arr = pc.replace_with_mask(arr, has, pc.replace_substring_regex(arr.filter(has), CONTROL_CHARS, ""))
    return arr


def _empty_turns(messages: pa.Array) -> np.ndarray:
    """Per row: does a user or assistant turn of its conversation hold no text (an empty answer to train on)?"""
    role, content = pc.list_flatten(messages).flatten()
    speaking = pc.is_in(role, pa.array(["user", "assistant"])).to_numpy(zero_copy_only=False)
    empty = blank(content).to_numpy(zero_copy_only=False)
    return per_row_any(speaking & empty, turn_offsets(messages))


def _first_reason(current: pa.Array, mask: pa.Array, reason: str) -> pa.Array:
    """Keep an existing reason; set ``reason`` where ``mask`` is true and none is set yet."""
    return pc.if_else(pc.and_(pc.is_null(current), pc.fill_null(mask, False)), pa.scalar(reason), current)


class NormalizeStage(Stage):
    name = "normalize"
    kind = "ingest"  # type: ignore[assignment]
    version = 3  # 2: conversation turns are cleaned too; 3: invisible characters, empty turns
    Params = NormalizeParams
    requires = ("prompt", "response", "messages", "source")
    provides = ()

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        p: NormalizeParams = self.params
        prompt = _clean(table.column("prompt").combine_chunks(), p)
        response = _clean(table.column("response").combine_chunks(), p)
        reason = table.column("_bad_reason").combine_chunks()
        has_msgs = pc.is_valid(table.column("messages"))
        prompts_only = (table.schema.metadata or {}).items() >= PROMPTS_ONLY.items()
        if p.require_response and not prompts_only:
            reason = _first_reason(reason, blank(response), "empty response")
        else:
            no_text = pc.and_(pc.is_null(prompt), pc.is_null(response))
            reason = _first_reason(reason, no_text, "no prompt and no response")
        empty_prompt = pc.and_(pc.is_valid(prompt), blank(prompt))
        reason = _first_reason(reason, empty_prompt, "empty prompt")
        size = pc.add(pc.fill_null(pc.utf8_length(prompt), 0), pc.fill_null(pc.utf8_length(response), 0))
        if pc.any(has_msgs).as_py():
            messages = with_contents(table.column("messages").combine_chunks(), lambda content: _clean(content, p))
            size = pc.if_else(has_msgs, pa.array(turn_chars(messages)), size)
            reason = _first_reason(reason, pa.array(_empty_turns(messages)), "malformed messages: a user or assistant "
                                   "turn has no text")
            table = table.set_column(table.column_names.index("messages"), "messages", messages)
        reason = _first_reason(reason, pc.greater(size, p.max_chars), f"too large: over max_chars={p.max_chars}")
        table = table.set_column(table.column_names.index("prompt"), "prompt", prompt)
        table = table.set_column(table.column_names.index("response"), "response", response)
        return table.set_column(table.column_names.index("_bad_reason"), "_bad_reason", reason)
