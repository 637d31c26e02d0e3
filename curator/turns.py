"""Conversations (``messages`` / ``conversations`` columns) read with Arrow kernels, a column at a time.

A conversation column that the reader typed as a list of structs with string fields is checked and mapped
on its flattened turns: rows that pass every check of ``curator.samples._parse_turns`` (a non-empty list of
objects, every role known, every content a string, the last turn the expected role's, a user turn) are
read here (a turn with tool calls is not); the other rows (and columns of any other type: JSON text, mixed types) go through
``_parse_turns`` one by one, which words their error. Field lookup is the per-row reader's: ``role`` /
``content``, or for ShareGPT ``from`` / ``value`` when the struct has that field, else ``role`` / ``content``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function": "tool"}
TOOL_CALL_FIELDS = ("tool_calls", "function_call")  # a turn's calls, which the canonical turns cannot hold
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def turn_offsets(column: pa.Array) -> np.ndarray:
    """Where each row's turns start and end in ``pc.list_flatten(column)`` (int64, one more than the rows; a null
    row has none)."""
    return np.concatenate([[0], np.cumsum(pc.fill_null(pc.list_value_length(column), 0).to_numpy())]).astype(np.int64)


def lists(offsets: np.ndarray, values: pa.Array, mask: pa.Array | None = None) -> pa.Array:
    """A list array of ``values`` cut at ``offsets`` (null where ``mask`` is true)."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values, mask=mask)


def _string_field(struct: pa.DataType, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that ``struct`` has: its name if it holds strings (or only nulls), ``""`` if it holds
    another type (the caller reads the column row by row), None if the struct has none of them."""
    for name in names:
        if struct.get_field_index(name) >= 0:
            kind = struct.field(name).type
            return name if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind) else ""
    return None


def struct_turns(column: pa.Array, sharegpt: bool) -> tuple[np.ndarray, pa.Array, pa.Array] | None:
    """(offsets into the flattened turns per row, role, content) of a list-of-struct column, the struct's
    nulls carried into both fields and ShareGPT roles mapped; None for a column of another type."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return None
    struct = column.type.value_type
    if not pa.types.is_struct(struct):
        return None
    role_name = _string_field(struct, ("from", "role") if sharegpt else ("role",))
    content_name = _string_field(struct, ("value", "content") if sharegpt else ("content",))
    if role_name == "" or content_name == "":
        return None
    offsets = turn_offsets(column)
    flat = pc.list_flatten(column)
    fields = dict(zip([f.name for f in struct], flat.flatten()))  # the struct's nulls carried into its fields
    n = len(flat)

    def field(name: str | None) -> pa.Array:
        return fields[name].cast(pa.string()) if name is not None else pa.nulls(n, pa.string())

    role, content = field(role_name), field(content_name)
    if sharegpt:
        keys = pa.array(list(SHAREGPT_ROLES), pa.string())
        mapped = pa.array(list(SHAREGPT_ROLES.values()), pa.string()).take(pc.index_in(role, value_set=keys))
        role = pc.coalesce(mapped, role)
    return offsets, role, content


def per_row(ufunc: np.ufunc, values: np.ndarray, offsets: np.ndarray, empty) -> np.ndarray:
    """``ufunc`` reduced over each row's turns (``offsets`` into the flattened turns); ``empty`` for a row
    without turns."""
    padded = np.append(values, np.array([empty], values.dtype))  # a row starting at the end reads the pad
    return np.where(offsets[1:] > offsets[:-1], ufunc.reduceat(padded, offsets[:-1]), empty)


def per_row_any(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per row (``offsets`` into the flattened turns): is any of its turns flagged?"""
    return per_row(np.add, flags.astype(np.int64), offsets, 0) > 0


def _tool_calls(column: pa.Array) -> np.ndarray | bool:
    """Per flattened turn: does it hold tool calls (a non-null ``function_call``, or a non-empty ``tool_calls``)?"""
    struct = column.type.value_type
    found: np.ndarray | bool = False
    for name in TOOL_CALL_FIELDS:
        if struct.get_field_index(name) >= 0:
            value = pc.list_flatten(column).flatten()[struct.get_field_index(name)]
            held = pc.is_valid(value)
            if pa.types.is_list(value.type) or pa.types.is_large_list(value.type):
                held = pc.and_(held, pc.greater(pc.fill_null(pc.list_value_length(value), 0), 0))
            found = found | held.to_numpy(zero_copy_only=False)
    return found


def read_conversations(column: pa.Array, sharegpt: bool, last: str
                       ) -> tuple[pa.Array, pa.Array, pa.Array, np.ndarray] | None:
    """(messages, prompt = last user turn, response = final turn or null when ``last`` is ``"user"``, clean
    mask) of a list-of-struct column; rows not clean are null in all three and left to the caller."""
    turns = struct_turns(column, sharegpt)
    if turns is None:
        return None
    offsets, role, content = turns
    n = len(offsets) - 1
    nonempty = (offsets[1:] > offsets[:-1]) & pc.is_valid(column).to_numpy(zero_copy_only=False)
    bad_turn = (pc.invert(pc.fill_null(pc.is_in(role, value_set=pa.array(ROLES)), False)).to_numpy(zero_copy_only=False)
                | pc.is_null(content).to_numpy(zero_copy_only=False) | _tool_calls(column))
    is_user = pc.fill_null(pc.equal(role, "user"), False).to_numpy(zero_copy_only=False)
    final = np.maximum(offsets[1:] - 1, 0)
    last_ok = np.zeros(n, np.bool_)
    if len(role):
        last_ok = pc.fill_null(pc.equal(role.take(pa.array(final)), last), False).to_numpy(zero_copy_only=False)
    clean = nonempty & ~per_row_any(bad_turn, offsets) & last_ok & per_row_any(is_user, offsets)
    latest_user = per_row(np.maximum, np.where(is_user, np.arange(len(role)), -1), offsets, -1)
    mask = pa.array(~clean)
    structs = pa.StructArray.from_arrays([role, content], fields=list(MESSAGE_TYPE.value_type))
    messages = lists(offsets, structs, mask)
    prompt = pc.if_else(pa.array(clean), content.take(pa.array(np.maximum(latest_user, 0))), None) if len(role) \
        else pa.nulls(n, pa.string())
    if last == "user" or not len(role):
        response = pa.nulls(n, pa.string())
    else:
        response = pc.if_else(pa.array(clean), content.take(pa.array(final)), None)
    return messages, prompt, response, clean


def ends_with_user(column: pa.Array) -> bool | None:
    """Every row a non-empty list whose last turn is an object with role ``user`` (None: the column is not a
    list of structs; the caller checks it row by row)."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) \
            or not pa.types.is_struct(column.type.value_type):
        return None
    if len(column) == 0 or column.null_count:
        return False
    offsets = turn_offsets(column)
    if not np.diff(offsets).all() or column.type.value_type.get_field_index("role") < 0:
        return False
    last = pc.list_flatten(column).take(pa.array(offsets[1:] - 1))
    role = dict(zip([f.name for f in column.type.value_type], last.flatten()))["role"]
    return bool(pc.all(pc.fill_null(pc.equal(role.cast(pa.string()), "user"), False)).as_py())


def turn_chars(messages: pa.Array) -> np.ndarray:
    """Characters of every turn's content summed per row (int64; null or empty conversations: 0)."""
    content = pc.list_flatten(messages).flatten()[messages.type.value_type.get_field_index("content")]
    chars = pc.fill_null(pc.utf8_length(content), 0).to_numpy().astype(np.int64)
    return per_row(np.add, chars, turn_offsets(messages), 0)


def with_contents(messages: pa.Array, change: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """A canonical ``messages`` column with ``change`` applied to the contents of all its turns at once
    (``messages`` itself when ``change`` returns its argument)."""
    role, content = pc.list_flatten(messages).flatten()
    changed = change(content)
    if changed is content:
        return messages
    structs = pa.StructArray.from_arrays([role, changed], fields=list(MESSAGE_TYPE.value_type))
    return lists(turn_offsets(messages), structs, pc.is_null(messages) if messages.null_count else None)


def conversation_text(messages: pa.Array | pa.ChunkedArray, sep: str) -> pa.Array:
    """Per row: every turn's content joined with ``sep`` (null where the row has no conversation)."""
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    content = pc.list_flatten(messages).flatten()[messages.type.value_type.get_field_index("content")]
    joined = pc.binary_join(lists(turn_offsets(messages), pc.fill_null(content.cast(pa.string()), "")), sep)
    return pc.if_else(pc.is_valid(messages), joined, pa.scalar(None, pa.string()))
