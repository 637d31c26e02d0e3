"""The layout of ``dataset/``: the recipe's ``output:`` (training columns a trainer reads, plus provenance).

``output: {format: F, scores: [column, ...], conversational: true, flagged: keep}`` with F one of

- ``table`` (default; ``arrow`` is its former name): every column of the kept rows and added samples;
- ``messages``: ``messages`` = [{role, content}, ...] per row (conversational SFT, TRL's ``messages``);
- ``prompt_completion``: TRL's ``prompt`` / ``completion``; conversational (lists of messages: every turn
  before the final assistant turn, and that turn) or, with ``conversational: false``, plain strings
  (single-turn rows only);
- ``text``: ``text`` = the document (pre-training; rows without a prompt only);
- ``preference``: TRL's ``prompt`` / ``chosen`` / ``rejected`` (DPO; rows read in the ``preference`` layout):
  strings, or for conversational pairs the turns before the chosen answer, [the chosen final turn] and [the
  rejected final turn].

Next to the training columns the other formats keep ``sample_id``, ``source``, ``parent_id`` and
``rebalance_role`` (null where a row has none); every format adds the score columns listed in ``scores``
(joined by the engine from ``scores/``). A row the format cannot hold (a document in ``messages``, a
conversation in ``text``) is an error naming the format that can. ``flagged: keep`` (default) writes the rows
``decide`` flagged (or a stage could not score) with the kept ones, ``drop`` leaves them out (their ledger status
stays ``flagged``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.errors import RecipeError
from curator.samples import MESSAGE_TYPE, as_read
from curator.turns import lists, turn_offsets

FORMATS = ("table", "arrow", "messages", "prompt_completion", "text", "preference")
PROVENANCE = ("sample_id", "source", "parent_id", "rebalance_role")


@dataclass(frozen=True)
class OutputSpec:
    format: Literal["table", "arrow", "messages", "prompt_completion", "text", "preference"] = "table"
    scores: tuple[str, ...] = ()  # score columns kept next to the training columns
    conversational: bool = True  # prompt_completion: lists of messages (True) or plain strings
    flagged: Literal["keep", "drop"] = "keep"  # flagged rows in dataset/ (to look at; trained on) or left out

    def trainable(self) -> tuple[str, ...]:
        """The ledger statuses of the input rows ``dataset/`` holds."""
        return ("kept", "flagged") if self.flagged == "keep" else ("kept",)


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
    """Column ``name`` of ``table`` as one array of ``type_`` (nulls when absent)."""
    if name not in table.column_names:
        return pa.nulls(table.num_rows, type_)
    return table.column(name).combine_chunks().cast(type_)


def _turns(roles: list[str], contents: list[pa.Array]) -> pa.Array:
    """One list of len(roles) messages per row: row i = [{roles[k], contents[k][i]} for k]."""
    n, k = len(contents[0]), len(roles)
    order = pa.array((np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel())
    content = pa.concat_arrays([c.cast(pa.string()) for c in contents]).take(order)
    role = pa.array(roles, pa.string()).take(pa.array(np.tile(np.arange(k), n)))
    structs = pa.StructArray.from_arrays([role, content], fields=list(MESSAGE_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), structs)


def _require(ok: pa.Array, what: str, fmt: str, instead: str) -> None:
    bad = len(ok) - (pc.sum(pc.fill_null(ok, False).cast(pa.int64())).as_py() or 0)
    if bad:
        raise RecipeError(f"output format {fmt!r}: {bad} dataset row(s) are {what}; set `output: {{format: {instead}}}` "
                       "in the recipe (or drop those rows with a decide rule)")


def _split_messages(messages: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(every turn but the last, [the last turn]) per row of a messages column without nulls."""
    offsets = turn_offsets(messages)
    lengths = np.diff(offsets)
    turns = pc.list_flatten(messages)  # (the caller cast the column to MESSAGE_TYPE)
    is_last = np.zeros(len(turns), np.bool_)
    is_last[offsets[1:][lengths > 0] - 1] = True
    head = lists(np.concatenate([[0], np.cumsum(np.maximum(lengths - 1, 0))]), turns.filter(pa.array(~is_last)))
    last = lists(np.concatenate([[0], np.cumsum(np.minimum(lengths, 1))]), turns.filter(pa.array(is_last)))
    return head, last


def _single_turn(messages: pa.Array) -> pa.Array:
    """Per row: no conversation, or exactly [user, assistant]."""
    offsets = turn_offsets(messages)
    role = pc.list_flatten(messages).flatten()[0].cast(pa.string())
    pair = np.flatnonzero(np.diff(offsets) == 2)
    ok = np.zeros(len(messages), np.bool_)
    if len(pair):
        first, second = (pc.fill_null(pc.equal(role.take(pa.array(offsets[pair] + k)), r), False).to_numpy(
            zero_copy_only=False) for k, r in ((0, "user"), (1, "assistant")))
        ok[pair] = first & second
    return pa.array(ok | pc.is_null(messages).to_numpy(zero_copy_only=False))


def training_columns(table: pa.Table, spec: OutputSpec) -> dict[str, pa.Array]:
    """The training columns of ``spec.format`` for ``table`` (canonical columns)."""
    fmt = spec.format
    prompt, response = _column(table, "prompt", pa.string()), _column(table, "response", pa.string())
    msgs = _column(table, "messages", MESSAGE_TYPE)
    has_msgs = pc.is_valid(msgs)
    if fmt == "text":
        _require(pc.and_(pc.is_null(prompt), pc.invert(has_msgs)), "conversations (they have a prompt)", fmt,
                 "messages")
        return {"text": response}
    _require(pc.or_(has_msgs, pc.is_valid(prompt)), "documents without a prompt", fmt, "text")
    if fmt == "messages":
        return {"messages": pc.if_else(has_msgs, msgs, _turns(["user", "assistant"], [prompt, response]))}
    if fmt == "preference":
        rejected = table.column("rejected").combine_chunks() if "rejected" in table.column_names \
            else pa.nulls(table.num_rows, pa.string())
        answered = pc.is_valid(rejected)
        if pa.types.is_list(rejected.type) or pa.types.is_large_list(rejected.type):
            answered = pc.and_(answered, pc.greater(pc.fill_null(pc.list_value_length(rejected), 0), 0))
        _require(pc.and_(answered, pc.is_valid(response)), "not preference pairs (no rejected answer)", fmt, "table")
        if not pc.any(has_msgs).as_py():
            return {"prompt": prompt, "chosen": response, "rejected": rejected.cast(pa.string())}
        _require(has_msgs, "plain-string pairs among conversational ones", fmt, "table")
        head, last = _split_messages(msgs)  # TRL's conversational pairs: the turns before, the chosen final turn
        return {"prompt": head, "chosen": last, "rejected": _final_turns(rejected)}
    if spec.conversational:
        head, last = _split_messages(msgs.filter(has_msgs))
        where = pc.indices_nonzero(has_msgs)
        conv_p, conv_c = _turns(["user"], [prompt]), _turns(["assistant"], [response])
        return {"prompt": _replace_rows(conv_p, where, head), "completion": _replace_rows(conv_c, where, last)}
    _require(_single_turn(msgs), "multi-turn conversations", fmt, "messages")
    return {"prompt": prompt, "completion": response}


def _final_turns(answers: pa.Array) -> pa.Array:
    """Per row, [its final turn] of a column of conversations: lists of turns, or their JSON text (what a column of
    mixed types passes through as); any other string is [an assistant turn of it]."""
    rows = []
    for v in map(as_read, answers.to_pylist()):
        if isinstance(v, str) and v.startswith("["):
            try:
                turns = json.loads(v)
                v = turns if turns and all(isinstance(t, dict) and "content" in t for t in turns) else v
            except ValueError:
                pass
        rows.append([{"role": "assistant", "content": v}] if isinstance(v, str) else
                    [{"role": v[-1].get("role"), "content": v[-1].get("content")}])
    return pa.array(rows, MESSAGE_TYPE)


def _replace_rows(base: pa.Array, rows: pa.Array, values: pa.Array) -> pa.Array:
    """``base`` with ``base[rows[i]] = values[i]``."""
    if not len(rows):
        return base
    mask = np.zeros(len(base), np.bool_)
    mask[rows.to_numpy()] = True
    pick = np.cumsum(mask) - 1
    spread = values.take(pa.array(np.where(mask, pick, 0)))
    return pc.if_else(pa.array(mask), spread, base)


def export(table: pa.Table, spec: OutputSpec) -> pa.Table:
    """``table`` (kept rows then added samples, canonical columns plus the rest) in ``spec``'s layout."""
    if spec.format in ("table", "arrow"):
        return table
    cols = training_columns(table, spec)
    for name in PROVENANCE:
        cols[name] = _column(table, name, pa.string())
    return pa.table({**cols, **{name: table.column(name) for name in spec.scores}})
