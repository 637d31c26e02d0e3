"""Canonical sample schema, format adapters, ``sample_id`` and shard assignment (DESIGN §3).

Canonical columns: ``sample_id``, ``prompt``, ``response``, ``messages`` (list of
``{role, content}``), ``source``; every other input column passes through, as a data set can hold it (a
``map`` as a list of ``{key, value}`` structs; a type ``datasets`` cannot represent is an ``InputError``).
Column names must be unique and none of the engine's own (``ENGINE_COLUMNS``). Names that would clash with
curator's columns pass through renamed: one named like a canonical column that its layout does not read (its own
``sample_id``; a ``messages`` column in a prompt/response file; ``rejected`` outside the preference layout) as
``input_<name>``, and one starting with ``_``
(curator's columns that no output keeps; ``_id`` of a database export) as ``input<name>`` (``input_id``). A pandas
index stored in the file (``__index_level_N__``) is not data and is not kept. The ``datasets`` features an input
declares for the columns passing through unchanged ride along in the schema metadata (``curator.features``).
Adapters never raise on a bad row: they return a per-row ``_bad_reason`` (null when fine),
and the ingest step quarantines those rows. In a layout with a prompt (``PROMPT_COLUMN``), a null or absent
prompt makes a row bad (``missing prompt``; alpaca's ``input`` and dolly's ``context`` never stand in for it).
The ``preference`` layout (``prompt``, ``chosen``, ``rejected`` strings: TRL's DPO rows) reads ``chosen`` as the
response (what training moves the model toward) and passes ``rejected`` through; its rows' ids also hash
``rejected`` (``preference_ids``), so pairs that differ only there are not duplicates.
The ``prompts`` layout (a ``prompt`` column alone, or
``messages`` whose last turn is the user's) holds prompts without responses, read as probe rows for
stages such as ``hardness``; its adapted table carries ``PROMPTS_ONLY`` in its schema metadata, so
``normalize`` does not ask those rows for a response.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.errors import InputError
from curator.features import input_features
from curator.hf_layout import layout
from curator.readers import FILE_ROW, MIXED_TAG
from curator.strings import from_buffers, hex_digests, rows_of, text_buffers
from curator.turns import (
    MESSAGE_TYPE,
    ROLES,
    SHAREGPT_ROLES,
    TOOL_CALL_FIELDS,
    ends_with_user,
    lists,
    per_row_any,
    read_conversations,
    turn_offsets,
)

CANONICAL_SCHEMA = pa.schema([("sample_id", pa.string()), ("prompt", pa.string()), ("response", pa.string()),
                              ("messages", MESSAGE_TYPE), ("source", pa.string())])
CANONICAL = tuple(CANONICAL_SCHEMA.names)


@dataclass(frozen=True)
class Format:
    """A known input layout: the columns that identify it and how to map them."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


FORMATS: dict[str, Format] = {
    "alpaca": Format("alpaca", ("instruction", "output"), ("input",)),
    "dolly": Format("dolly", ("instruction", "response"), ("context",)),
    "prompt_response": Format("prompt_response", ("prompt", "response")),
    "prompt_completion": Format("prompt_completion", ("prompt", "completion")),
    "messages": Format("messages", ("messages",)),
    "sharegpt": Format("sharegpt", ("conversations",)),
    "text": Format("text", ("text",)),
    "prompts": Format("prompts", ("prompt",)),  # or ``messages`` ending with a user turn
    "preference": Format("preference", ("prompt", "chosen", "rejected")),  # TRL's DPO rows: response = chosen
}
FORMAT_NAMES = ("auto", *FORMATS)
PROMPTS_ONLY = {b"curator.layout": b"prompts"}
PROMPT_COLUMN = {"alpaca": "instruction", "dolly": "instruction", "prompt_response": "prompt",
                 "prompt_completion": "prompt", "prompts": "prompt", "preference": "prompt"}  # the column a layout's
# prompt must have
PASSED = {"preference": ("rejected",)}  # columns that identify a layout but pass through (the rejected answer)
RESERVED = ("_bad_reason", "_input_idx", "_input_row")  # what the engine adds to every canonical row
ENGINE_COLUMNS = (*RESERVED, FILE_ROW)  # ... and what the readers number rows in


PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # pandas' row index stored in a Parquet/Arrow file: not data
UNREAD_CANONICAL = ("sample_id", "prompt", "response", "messages", "rejected")  # input columns of these names that
# its layout does not read are kept as ``input_<name>`` (curator writes its own ``sample_id``, ``prompt``, ...; a
# ``rejected`` column is a preference pair's rejected answer, which stages read, only in the preference layout)


def check_column_names(names: list[str], where: str) -> None:
    """An ``InputError`` naming the column if a name is used twice or is one of ``ENGINE_COLUMNS``."""
    twice = [name for name, k in Counter(names).items() if k > 1]
    if twice:
        raise InputError(f"{where}: column '{twice[0]}' appears {names.count(twice[0])} times; give each column "
                         "a name of its own (curator keeps every column, by name)")
    taken = [name for name in names if name in ENGINE_COLUMNS]
    if taken:
        raise InputError(f"{where}: column '{taken[0]}' has a name curator uses for its own columns "
                         f"({', '.join(ENGINE_COLUMNS)}); rename it (e.g. '{taken[0].lstrip('_')}')")


def detect_format(columns: list[str], where: str) -> str:
    """The one format whose required columns are present; otherwise an error listing columns."""
    present = set(columns)
    matches = [f.name for f in FORMATS.values() if set(f.required) <= present]
    # A layout whose columns another match contains is not meant (prompt alone vs prompt + response).
    matches = [m for m in matches if not any(set(FORMATS[m].required) < set(FORMATS[o].required) for o in matches)]
    # A more specific layout wins over one it contains (dolly's 'response' vs prompt_response).
    if "dolly" in matches and "prompt_response" in matches and "prompt" not in present:
        matches.remove("prompt_response")
    if len(matches) == 1:
        return matches[0]
    accepted = "; ".join(f"{f.name}: {', '.join(f.required)}" for f in FORMATS.values())
    what = "ambiguous (matches " + ", ".join(matches) + ")" if matches else "not recognised"
    raise InputError(
        f"{where}: the column layout {sorted(columns)} is {what}. Accepted formats and their "
        f"required columns: {accepted}. Set `format:` on this input in the recipe."
    )


def _text(table: pa.Table, col: str) -> tuple[pa.Array, pa.Array | None]:
    """Column ``col`` as a string array plus per-row type errors (non-strings become null; None when every
    row is fine)."""
    arr = table.column(col).combine_chunks() if col in table.column_names else None
    n = table.num_rows
    if arr is None:
        return pa.nulls(n, pa.string()), None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
        tagged = pc.starts_with(arr, MIXED_TAG)
        if not pc.any(tagged).as_py():
            return arr, None
        reasons = [f"column '{col}' has a {v.split(':')[1]} value, expected a string" if t else None
                   for v, t in zip(arr.to_pylist(), tagged.to_pylist())]
        return pc.if_else(tagged, pa.scalar(None, pa.string()), arr), pa.array(reasons, pa.string())
    if pa.types.is_null(arr.type):
        return pa.nulls(n, pa.string()), None
    reasons: list[str | None] = []
    values: list[str | None] = []
    for v in arr.to_pylist():
        if v is None or isinstance(v, str):
            values.append(v)
            reasons.append(None)
        else:
            values.append(None)
            reasons.append(f"column '{col}' has a {type(v).__name__} value, expected a string")
    return pa.array(values, pa.string()), pa.array(reasons, pa.string())


def _join_text(a: pa.Array, b: pa.Array) -> pa.Array:
    """``a + "\\n\\n" + b`` where both are non-empty; ``b`` where ``a`` is an empty string; else ``a``
    (a null ``a`` stays null: a missing prompt)."""
    def filled(x: pa.Array) -> pa.Array:
        return pc.and_(pc.is_valid(x), pc.not_equal(pc.utf8_length(pc.fill_null(x, "")), 0))
    has_a, has_b = filled(a), filled(b)
    joined = pc.binary_join_element_wise(a, b, "\n\n")
    return pc.if_else(has_b, pc.if_else(has_a, joined, pc.if_else(pc.is_valid(a), b, a)), a)


def _messages(table: pa.Table, col: str, sharegpt: bool, last: str = "assistant"
              ) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """Parse a messages column: (messages, prompt = last user turn, response = final assistant turn, reason);
    ``last="user"`` reads prompt-only conversations (response null). Rows the Arrow reader
    (``curator.turns``) cannot take are parsed one by one."""
    column = table.column(col).combine_chunks()
    n = len(column)
    fast = read_conversations(column, sharegpt, last)
    if fast is not None and fast[3].all():
        return *fast[:3], pa.nulls(n, pa.string())
    rows = np.arange(n) if fast is None else np.flatnonzero(~fast[3])
    msgs, prompts, responses, reasons = [], [], [], []
    for raw in column.take(pa.array(rows, pa.int64())).to_pylist():
        try:
            turns = _parse_turns(raw, sharegpt, last)
            msgs.append(turns)
            asked = turns if last == "user" else turns[:-1]
            prompts.append(next((t["content"] for t in reversed(asked) if t["role"] == "user"), None))
            responses.append(None if last == "user" else turns[-1]["content"])
            reasons.append(None)
        except ValueError as exc:
            msgs.append(None)
            prompts.append(None)
            responses.append(None)
            reasons.append(f"malformed messages: {exc}")
    slow = (pa.array(msgs, MESSAGE_TYPE), pa.array(prompts, pa.string()), pa.array(responses, pa.string()),
            pa.array(reasons, pa.string()))
    if fast is None:
        return slow
    pick = np.arange(n)  # fast rows from the fast arrays, the others from the slow ones (appended after them)
    pick[rows] = n + np.arange(len(rows))
    pick = pa.array(pick)
    fast_arrays = (*fast[:3], pa.nulls(n, pa.string()))
    return tuple(pa.concat_arrays([f, s]).take(pick) for f, s in zip(fast_arrays, slow))  # type: ignore[return-value]


def _parse_turns(raw: object, sharegpt: bool, last: str = "assistant") -> list[dict[str, str]]:
    if isinstance(raw, str) and raw.startswith(MIXED_TAG):  # a list kept as JSON by the reader
        raw = json.loads(raw.split(":", 2)[2])
    elif isinstance(raw, str) and raw.lstrip().startswith("["):  # a column of conversations stored as JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"a string that is not a JSON list of turns ({exc.msg})") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError("expected a non-empty list of turns")
    turns = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i} is not an object")
        role = turn.get("from", turn.get("role")) if sharegpt else turn.get("role")
        content = turn.get("value", turn.get("content")) if sharegpt else turn.get("content")
        role = SHAREGPT_ROLES.get(role, role) if sharegpt else role
        if role not in ROLES:
            raise ValueError(f"turn {i} has unknown role {role!r}; expected one of {list(ROLES)}")
        if any(turn.get(k) for k in TOOL_CALL_FIELDS):
            raise ValueError(f"turn {i} holds tool calls, which curator's text conversations cannot keep (remove the "
                             "row, or its tool-call turns)")
        if isinstance(content, list):
            content = _text_parts(content, i)
        if not isinstance(content, str):
            raise ValueError(f"turn {i} content is not a string")
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != last:
        raise ValueError(f"the last turn must be the {last}'s")
    if not any(t["role"] == "user" for t in turns):
        raise ValueError("no user turn")
    return turns


def _text_parts(parts: list, turn: int) -> str:
    """A turn's content given as OpenAI-style parts (``[{"type": "text", "text": ...}, ...]``): its texts joined
    with nothing between them, as chat templates render them. A part of another type (an image, audio) or shape
    is an error: curator scores text, and dropping a part would change what the row says."""
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            what = f"a content part of type '{kind}'" if isinstance(kind, str) and kind != "text" else \
                'a content part that is not {"type": "text", "text": <string>}'
            raise ValueError(f"turn {turn} has {what}; curator reads text only (remove the row, or its non-text parts)")
        texts.append(part["text"])
    return "".join(texts)


def resolve_format(table: pa.Table, fmt: str, where: str) -> str:
    """``fmt``, or for ``auto`` the layout of ``table``'s columns (``prompts`` for ``messages`` whose every row
    ends with the user's turn). An input's rows are read in the layout its first block resolves to.
    Raises ``InputError`` for column names ``check_column_names`` refuses."""
    check_column_names(table.column_names, where)
    if fmt != "auto":
        return fmt
    fmt = detect_format(table.column_names, where)
    if fmt == "messages" and _ends_with_user(table.column("messages")):
        return "prompts"
    return fmt


def _source_labels(table: pa.Table, label: str, n: int, keep_column: bool) -> pa.Array | pa.ChunkedArray:
    """Each row's ``source``: the input's own ``source`` column (as text; ``label`` where null) if it has one that
    Arrow can cast to text and ``keep_column``, else ``label``."""
    if keep_column and "source" in table.column_names:
        try:
            return pc.fill_null(table.column("source").cast(pa.string()), label)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return pa.repeat(pa.scalar(label, pa.string()), n)


def adapt(table: pa.Table, fmt: str, source: str, where: str, keep_column: bool = True) -> pa.Table:
    """Map ``table`` in layout ``fmt`` (``auto``: ``resolve_format`` on ``table``) onto canonical columns
    (without ``sample_id``); ``source`` labels the rows (an input's own ``source`` column wins if
    ``keep_column``: the recipe set no ``source:``).

    Adds ``_bad_reason`` (string, null for good rows). Mapped input columns are replaced;
    all others pass through.
    """
    fmt = resolve_format(table, fmt, where)
    spec = FORMATS.get(fmt)
    if spec is None:
        raise InputError(f"{where}: unknown format '{fmt}'; accepted: {', '.join(FORMAT_NAMES)}")
    prompt_messages = fmt == "prompts" and "prompt" not in table.column_names and "messages" in table.column_names
    missing = [] if prompt_messages else [c for c in spec.required if c not in table.column_names]
    if missing:
        raise InputError(f"{where}: format '{fmt}' needs column(s) {missing}; the file has {table.column_names}")
    n = table.num_rows
    messages = pa.nulls(n, MESSAGE_TYPE)
    reasons: list[pa.Array] = []

    def text(col: str) -> pa.Array:
        arr, why = _text(table, col)
        if why is not None:
            reasons.append(why)
        return arr

    if fmt == "alpaca":
        prompt, response = _join_text(text("instruction"), text("input")), text("output")
    elif fmt == "dolly":
        prompt, response = _join_text(text("instruction"), text("context")), text("response")
    elif fmt == "prompt_response":
        prompt, response = text("prompt"), text("response")
    elif fmt == "prompt_completion":
        prompt, response = text("prompt"), text("completion")
    elif fmt == "preference" and _holds_text(table, "chosen"):
        prompt, response = text("prompt"), text("chosen")
        text("rejected")  # only its type is checked: it passes through
    elif fmt == "preference":  # conversational pairs: the prompt's turns (or the chosen one's own) and the chosen turns
        turns = pa.table({"messages": pa.array(_preference_conversations(table), pa.string())})
        messages, prompt, response, why = _messages(turns, "messages", sharegpt=False)
        reasons.append(why)
    elif fmt == "text":
        prompt, response = pa.nulls(n, pa.string()), text("text")
    elif fmt == "prompts" and not prompt_messages:
        prompt, response = text("prompt"), pa.nulls(n, pa.string())
    elif fmt == "prompts":
        messages, prompt, response, why = _messages(table, "messages", sharegpt=False, last="user")
        reasons.append(why)
    else:
        messages, prompt, response, why = _messages(table, spec.required[0], sharegpt=fmt == "sharegpt")
        reasons.append(why)
    if fmt in PROMPT_COLUMN and not prompt_messages:  # after the type reasons: a wrong type is named as such
        reasons.append(_missing_prompt(table, PROMPT_COLUMN[fmt]))
    read = {*spec.required, *spec.optional, *(["messages"] if prompt_messages else [])} - set(PASSED.get(fmt, ()))
    renamed = _renamed(table.column_names, read | set(PASSED.get(fmt, ())), where)
    mapped = dict.fromkeys((*read, *CANONICAL))
    rest = table.drop_columns([c for c in table.column_names
                               if c in mapped and c not in renamed or PANDAS_INDEX.fullmatch(c)])
    source_arr = _source_labels(table, source, n, keep_column)
    bad = pc.coalesce(*reasons) if reasons else pa.nulls(n, pa.string())
    out = pa.table({"prompt": prompt, "response": response, "messages": messages, "source": source_arr})
    passed = {}  # the columns passed through unchanged, by their new name: they keep the features declared
    for name in rest.column_names:
        column = _pass_through(rest.column(name), name, where)
        out = out.append_column(renamed.get(name, name), column)
        if column.type == rest.column(name).type:
            passed[name] = renamed.get(name, name)
    out = out.append_column("_bad_reason", bad)
    meta = {**(PROMPTS_ONLY if fmt == "prompts" else {}), **input_features(table.schema, passed)}
    return out.replace_schema_metadata(meta) if meta else out


def _renamed(names: list[str], read: set[str], where: str) -> dict[str, str]:
    """``{name: new name}`` for the input's columns that would clash with curator's (module docstring); an
    ``InputError`` if the file has a column of the new name too."""
    renamed = {c: f"input_{c}" for c in UNREAD_CANONICAL if c in names and c not in read}
    renamed |= {c: f"input{c}" for c in names if c.startswith("_") and not PANDAS_INDEX.fullmatch(c)}
    clash = next((c for c, new in renamed.items() if new in names), None)
    if clash:
        raise InputError(f"{where}: columns '{clash}' and '{renamed[clash]}': curator keeps an input's '{clash}' as "
                         f"'{renamed[clash]}' (its own columns are named '{clash.lstrip('_')}' or start with '_'); "
                         "rename or drop one of them")
    return renamed


def _missing_prompt(table: pa.Table, col: str) -> pa.Array:
    """Per row: ``missing prompt`` where the prompt column ``col`` is null (or the row lacks it), else null."""
    reason = pa.scalar(f"missing prompt: column '{col}' is null or absent", pa.string())
    return pc.if_else(pc.is_null(table.column(col).combine_chunks()), reason, pa.scalar(None, pa.string()))


def _pass_through(column: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    """A column the layout does not use, as ``dataset/`` can hold it (``_stored_type``): mixed-type text untagged,
    every ``map`` (also nested) a list of ``{key, value}`` structs, float16 as float32. Raises ``InputError`` naming
    the column for a type ``datasets`` cannot represent (a union, an interval, ...)."""
    column = _untagged(column)
    storable = _stored_type(column.type)
    why = _unstorable(storable)
    if why is not None:
        raise InputError(f"{where}: column '{name}' cannot be written to dataset/ ({why.rstrip('.')}); convert it "
                         "to another type or drop it in the file")
    return column if storable == column.type else column.cast(storable)


def _stored_type(kind: pa.DataType) -> pa.DataType:
    """``kind`` as curator stores it: every map type replaced by a list of ``{key, value}`` structs, and every
    float16 by float32 (DuckDB, behind every view, cannot read half floats; the values are the same)."""
    if pa.types.is_float16(kind):
        return pa.float32()
    if pa.types.is_map(kind):
        return pa.list_(pa.struct([("key", _stored_type(kind.key_type)), ("value", _stored_type(kind.item_type))]))
    if pa.types.is_struct(kind):
        return pa.struct([f.with_type(_stored_type(f.type)) for f in kind])
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_stored_type(kind.value_type)), kind.list_size)
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_stored_type(kind.value_type)))
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_stored_type(kind.value_type)))
    return kind


@functools.lru_cache(maxsize=256)
def _unstorable(kind: pa.DataType) -> str | None:
    """Why ``datasets`` cannot represent ``kind`` as a feature, or None if it can (plain types are known
    without importing ``datasets``)."""
    schema = pa.schema([("column", kind)])
    if layout(schema) is not None:
        return None
    import datasets  # start-up time: datasets (~1 s), only for types curator.hf_layout does not describe

    try:
        datasets.Features.from_arrow_schema(schema)
    except (ValueError, TypeError, NotImplementedError) as exc:
        return str(exc)
    return None


def _untagged(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A pass-through column whose rows held different JSON types (read as text): the other values as their
    JSON, without the reader's tag."""
    if not pa.types.is_string(column.type) or not pc.any(pc.starts_with(column, MIXED_TAG)).as_py():
        return column
    return pc.replace_substring_regex(column, "^" + re.escape(MIXED_TAG) + "[a-z]+:", "")


def _ends_with_user(column: pa.ChunkedArray) -> bool:
    """Every row is a list whose last turn has role ``user`` (a prompts-only conversation file)."""
    fast = ends_with_user(column.combine_chunks())
    if fast is not None:
        return fast
    rows = column.to_pylist()
    return bool(rows) and all(isinstance(m, list) and m and isinstance(m[-1], dict) and m[-1].get("role") == "user"
                              for m in rows)


def _id_of(prompt: str | None, response: str | None, messages: list | None) -> str:
    payload = json.dumps({"messages": messages, "prompt": prompt, "response": response},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


_ESCAPED = np.arange(256, dtype=np.uint8)  # the letter after the backslash json.dumps writes
_ESCAPED[[0x0A, 0x0D, 0x09]] = np.frombuffer(b"nrt", np.uint8)
_OTHER_CONTROL = np.zeros(256, np.bool_)  # control characters json.dumps writes as \uXXXX, \b or \f
_OTHER_CONTROL[[*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]] = True


def _json_literals(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(``json.dumps(value, ensure_ascii=False)`` per string, rows with other control characters,
    whose literal the caller must build): backslashes inserted before quotes, backslashes, newlines,
    carriage returns and tabs, on the buffer at once."""
    valid = pc.is_valid(arr) if arr.null_count else None
    data, offsets = text_buffers(arr)
    pos = np.flatnonzero((data < 0x20) | (data == 0x22) | (data == 0x5C))
    found = data[pos]
    other = np.zeros(len(arr), np.bool_)
    other[rows_of(pos[_OTHER_CONTROL[found]], offsets)] = True
    out = np.insert(data, pos, np.uint8(0x5C))
    out[pos + np.arange(1, len(pos) + 1)] = _ESCAPED[found]
    literal = pc.binary_join_element_wise('"', from_buffers(out, offsets + np.searchsorted(pos, offsets)), '"', "")
    return (pc.if_else(valid, literal, "null") if valid is not None else literal), other


def _messages_literals(messages: pa.Array) -> tuple[pa.Array, np.ndarray] | None:
    """(``json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`` of each conversation of
    a canonical ``messages`` column, rows whose literal the caller must build); None for another type."""
    if messages.type != MESSAGE_TYPE:
        return None
    offsets = turn_offsets(messages)
    role, content = pc.list_flatten(messages).flatten()
    c_lit, c_other = _json_literals(content)
    r_lit, r_other = _json_literals(role)
    turn = pc.binary_join_element_wise('{"content":', c_lit, ',"role":', r_lit, "}", "")
    joined = pc.binary_join(lists(offsets, turn), ",")
    literal = pc.if_else(pc.is_valid(messages), pc.binary_join_element_wise("[", joined, "]", ""), "null")
    return literal, per_row_any(c_other | r_other, offsets)


def sample_ids(table: pa.Table) -> pa.Array:
    """sha256 of the canonical JSON of (prompt, response, messages) per row, hex.

    Canonical JSON = ``json.dumps({"messages", "prompt", "response"}, sort_keys=True,
    ensure_ascii=False, separators=(",", ":"))``; built with Arrow kernels for speed and
    checked against that definition in the tests.
    """
    prompt = table.column("prompt").combine_chunks()
    response = table.column("response").combine_chunks()
    messages = table.column("messages").combine_chunks()
    p_lit, p_other = _json_literals(prompt)
    r_lit, r_other = _json_literals(response)
    m = _messages_literals(messages) if messages.null_count < len(messages) else None
    m_lit, other = (m[0], p_other | r_other | m[1]) if m is not None else ("null", p_other | r_other)
    payload = pc.binary_join_element_wise('{"messages":', m_lit, ',"prompt":', p_lit, ',"response":', r_lit, "}", "")
    ids = hex_digests(payload)
    slow = pa.array(other)
    if m is None:
        slow = pc.or_(pc.is_valid(messages), slow)
    if pc.any(slow).as_py():
        rows = pc.indices_nonzero(slow)
        p, r, m = (col.take(rows).to_pylist() for col in (prompt, response, messages))
        ids = pc.replace_with_mask(ids, slow, pa.array([_id_of(*args) for args in zip(p, r, m)], pa.string()))
    return ids


def _holds_text(table: pa.Table, col: str) -> bool:
    """Column ``col`` holds strings only (no value of another JSON type, which the readers tag)."""
    kind = table.schema.field(col).type
    if pa.types.is_null(kind):
        return True
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return False
    return not pc.any(pc.starts_with(table.column(col).cast(pa.string()), MIXED_TAG)).as_py()


def as_read(value: object) -> object:
    """A value as the file held it (the readers keep a value of another JSON type in a text column as tagged JSON)."""
    return json.loads(value.split(":", 2)[2]) if isinstance(value, str) and value.startswith(MIXED_TAG) else value


def _preference_conversations(table: pa.Table) -> list[str | None]:
    """Per preference row, as JSON text: its prompt (a string as a user turn, or its turns) then its chosen turns
    (a string as an assistant turn); chosen turns that open with their own user or system turn are the whole
    conversation (UltraFeedback's layout). Whatever is not a list of turns is left for ``_parse_turns`` to word."""
    out = []
    for p, c in zip(table.column("prompt").to_pylist(), table.column("chosen").to_pylist()):
        p, c = as_read(p), as_read(c)
        c = [{"role": "assistant", "content": c}] if isinstance(c, str) else c
        if isinstance(c, list) and not (c and isinstance(c[0], dict) and c[0].get("role") in ("user", "system")):
            c = (p if isinstance(p, list) else [{"role": "user", "content": p}] if p is not None else []) + c
        out.append(None if c is None else json.dumps(c, ensure_ascii=False, default=str))
    return out


def preference_text(rejected: pa.Array) -> pa.Array:
    """A preference row's rejected answer as text: a string as it is, a conversation's turns joined by NUL ("" for
    a null)."""
    if isinstance(rejected, pa.ChunkedArray):
        rejected = rejected.combine_chunks()
    if pa.types.is_string(rejected.type) or pa.types.is_large_string(rejected.type) or pa.types.is_null(rejected.type):
        return pc.fill_null(rejected.cast(pa.string()), "")
    return pa.array(["\x00".join(str(t.get("content")) if isinstance(t, dict) else str(t) for t in v) if v else ""
                     for v in map(as_read, rejected.to_pylist())], pa.string())


def preference_ids(ids: pa.Array, rejected: pa.Array) -> pa.Array:
    """Ids of preference rows: the sha256 (hex) of ``"<content id>\\x00<rejected>"`` (``preference_text``)."""
    return hex_digests(pc.binary_join_element_wise(ids, preference_text(rejected), "\x00"))


def own_ids(ids: pa.Array, input_idx: pa.Array, input_row: pa.Array) -> pa.Array:
    """Ids for later exact copies kept as samples of their own (``dedupe: false``): the content id's first 8 hex
    digits (its shard) then the rest of the sha256 (hex) of ``"<content id>:<input_idx>:<input_row>"``."""
    position = pc.binary_join_element_wise(ids, input_idx.cast(pa.string()), input_row.cast(pa.string()), ":")
    return pc.binary_join_element_wise(pc.utf8_slice_codeunits(ids, 0, 8),
                                       pc.utf8_slice_codeunits(hex_digests(position), 8), "")


def later_repeats(values: pa.Array, order_by: pa.Table | None = None) -> pa.Array:
    """True where an earlier row has the same value; earlier = by the columns of ``order_by``
    (ascending) if given, else by row number (ties by row number). Only values seen more than once are sorted."""
    counts = pc.value_counts(values)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    mask = np.zeros(len(values), np.bool_)
    if len(repeated):
        rows = pc.indices_nonzero(pc.is_in(values, value_set=repeated))
        keys = {"v": values.take(rows)}
        if order_by is not None:
            keys.update({f"k{i}": c for i, c in enumerate(order_by.take(rows).columns)})
        keys["row"] = rows
        order = pc.sort_indices(pa.table(keys), [(k, "ascending") for k in keys])
        ranked = keys["v"].take(order)
        same = pc.equal(ranked.slice(1), ranked.slice(0, len(ranked) - 1)).to_numpy(zero_copy_only=False)
        mask[rows.take(order).to_numpy()[1:][same]] = True
    return pa.array(mask)


def shard_of(sample_id: str, n_shards: int) -> int:
    """Shard = int(sample_id[:8], 16) % n_shards; independent of the number of workers."""
    return int(sample_id[:8], 16) % n_shards


_HEX_VALUE = np.full(256, 255, np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_HEX_VALUE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def shard_indices(ids: pa.Array | pa.ChunkedArray, n_shards: int) -> pa.Array:
    """``shard_of`` over a string array of hex ids (vectorised on the id bytes)."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if len(ids) == 0:
        return pa.array([], pa.int32())
    offsets = np.frombuffer(ids.buffers()[1], np.int32, len(ids) + 1, ids.offset * 4)
    starts = offsets[:-1]
    if ids.null_count or np.any(offsets[1:] - starts < 8):
        return pa.array([int(s[:8], 16) % n_shards for s in ids.to_pylist()], pa.int32())  # raises like shard_of
    digits = _HEX_VALUE[np.frombuffer(ids.buffers()[2], np.uint8)[starts[:, None] + np.arange(8)]]
    if np.any(digits == 255):
        return pa.array([int(s[:8], 16) % n_shards for s in ids.to_pylist()], pa.int32())
    value = (digits.astype(np.uint64) << (4 * np.arange(7, -1, -1, dtype=np.uint64))).sum(axis=1)
    return pa.array((value % n_shards).astype(np.int32))
