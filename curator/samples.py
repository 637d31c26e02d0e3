"""Canonical sample schema, format adapters, ``sample_id`` and shard assignment (DESIGN §3).

Canonical columns: ``sample_id``, ``prompt``, ``response``, ``messages`` (list of
``{role, content}``), ``source``; every other input column passes through untouched.
Adapters never raise on a bad row: they return a per-row ``_bad_reason`` (null when fine),
and the ingest step quarantines those rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curator.errors import InputError
from curator.io import MIXED_TAG

MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
CANONICAL = ("sample_id", "prompt", "response", "messages", "source")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function": "tool"}


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
}
FORMAT_NAMES = ("auto", *FORMATS)


def detect_format(columns: list[str], where: str) -> str:
    """The one format whose required columns are present; otherwise an error listing columns."""
    present = set(columns)
    matches = [f.name for f in FORMATS.values() if set(f.required) <= present]
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


def _text(table: pa.Table, col: str) -> tuple[pa.Array, list[str | None]]:
    """Column ``col`` as a string array plus per-row type errors (non-strings become null)."""
    arr = table.column(col).combine_chunks() if col in table.column_names else None
    n = table.num_rows
    if arr is None:
        return pa.nulls(n, pa.string()), [None] * n
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
        tagged = pc.starts_with(arr, MIXED_TAG)
        if not pc.any(tagged).as_py():
            return arr, [None] * n
        reasons = [f"column '{col}' has a {v.split(':')[1]} value, expected a string" if t else None
                   for v, t in zip(arr.to_pylist(), tagged.to_pylist())]
        return pc.if_else(tagged, pa.scalar(None, pa.string()), arr), reasons
    if pa.types.is_null(arr.type):
        return pa.nulls(n, pa.string()), [None] * n
    reasons: list[str | None] = []
    values: list[str | None] = []
    for v in arr.to_pylist():
        if v is None or isinstance(v, str):
            values.append(v)
            reasons.append(None)
        else:
            values.append(None)
            reasons.append(f"column '{col}' has a {type(v).__name__} value, expected a string")
    return pa.array(values, pa.string()), reasons


def _join_text(a: pa.Array, b: pa.Array) -> pa.Array:
    """``a + "\\n\\n" + b`` where ``b`` is non-empty, else ``a``."""
    has_b = pc.and_(pc.is_valid(b), pc.not_equal(pc.utf8_length(pc.fill_null(b, "")), 0))
    joined = pc.binary_join_element_wise(a, b, "\n\n")
    return pc.if_else(has_b, joined, a)


def _messages(table: pa.Table, col: str, sharegpt: bool) -> tuple[pa.Array, pa.Array, pa.Array, list]:
    """Parse a messages column: (messages, prompt = last user turn, response = final assistant turn)."""
    msgs, prompts, responses, reasons = [], [], [], []
    for raw in table.column(col).to_pylist():
        try:
            turns = _parse_turns(raw, sharegpt)
            msgs.append(turns)
            prompts.append(next((t["content"] for t in reversed(turns[:-1]) if t["role"] == "user"), None))
            responses.append(turns[-1]["content"])
            reasons.append(None)
        except ValueError as exc:
            msgs.append(None)
            prompts.append(None)
            responses.append(None)
            reasons.append(f"malformed messages: {exc}")
    return pa.array(msgs, MESSAGE_TYPE), pa.array(prompts, pa.string()), pa.array(responses, pa.string()), reasons


def _parse_turns(raw: object, sharegpt: bool) -> list[dict[str, str]]:
    if isinstance(raw, str) and raw.startswith(MIXED_TAG):  # a list kept as JSON by the reader
        raw = json.loads(raw.split(":", 2)[2])
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
        if not isinstance(content, str):
            raise ValueError(f"turn {i} content is not a string")
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "assistant":
        raise ValueError("the last turn must be the assistant's")
    if not any(t["role"] == "user" for t in turns):
        raise ValueError("no user turn")
    return turns


def adapt(table: pa.Table, fmt: str, source: str, where: str) -> pa.Table:
    """Map ``table`` in layout ``fmt`` onto canonical columns (without ``sample_id``).

    Adds ``_bad_reason`` (string, null for good rows). Mapped input columns are replaced;
    all others pass through.
    """
    if fmt == "auto":
        fmt = detect_format(table.column_names, where)
    spec = FORMATS.get(fmt)
    if spec is None:
        raise InputError(f"{where}: unknown format '{fmt}'; accepted: {', '.join(FORMAT_NAMES)}")
    missing = [c for c in spec.required if c not in table.column_names]
    if missing:
        raise InputError(f"{where}: format '{fmt}' needs column(s) {missing}; the file has {table.column_names}")
    n = table.num_rows
    messages = pa.nulls(n, MESSAGE_TYPE)
    reasons: list[list[str | None]] = []

    def text(col: str) -> pa.Array:
        arr, why = _text(table, col)
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
    elif fmt == "text":
        prompt, response = pa.nulls(n, pa.string()), text("text")
    else:
        messages, prompt, response, why = _messages(table, spec.required[0], sharegpt=fmt == "sharegpt")
        reasons.append(why)
    mapped = dict.fromkeys((*spec.required, *spec.optional, *CANONICAL))
    rest = table.drop_columns([c for c in mapped if c in table.column_names])
    src = table.column("source") if "source" in table.column_names else None
    source_arr = (
        pc.fill_null(src.cast(pa.string()), source) if src is not None and pa.types.is_string(src.type)
        else pa.array([source] * n, pa.string())
    )
    bad = [next((r for r in row if r), None) for row in zip(*reasons)] if reasons else [None] * n
    out = pa.table({"prompt": prompt, "response": response, "messages": messages, "source": source_arr})
    for name in rest.column_names:
        out = out.append_column(name, rest.column(name))
    return out.append_column("_bad_reason", pa.array(bad, pa.string()))


def _id_of(prompt: str | None, response: str | None, messages: list | None) -> str:
    payload = json.dumps({"messages": messages, "prompt": prompt, "response": response},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_OTHER_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def _json_literals(arr: pa.Array) -> pa.Array:
    """``json.dumps(value, ensure_ascii=False)`` for each string of ``arr`` (rows with other
    control characters are handled by the caller). Escapes run only on rows that need them."""
    needs = pc.fill_null(pc.match_substring_regex(arr, r'[\\"\n\r\t]'), False)
    if pc.any(needs).as_py():
        sub = arr.filter(needs)
        for old, new in _JSON_ESCAPES:
            sub = pc.replace_substring(sub, old, new)
        arr = pc.replace_with_mask(arr, needs, sub)
    return pc.fill_null(pc.binary_join_element_wise('"', arr, '"', ""), "null")


def sample_ids(table: pa.Table) -> pa.Array:
    """sha256 of the canonical JSON of (prompt, response, messages) per row, hex.

    Canonical JSON = ``json.dumps({"messages", "prompt", "response"}, sort_keys=True,
    ensure_ascii=False, separators=(",", ":"))``; built with Arrow kernels for speed and
    checked against that definition in the tests.
    """
    prompt = table.column("prompt").combine_chunks()
    response = table.column("response").combine_chunks()
    messages = table.column("messages")
    slow = pc.or_(pc.is_valid(messages.combine_chunks()),
                  pc.or_(pc.fill_null(pc.match_substring_regex(prompt, _OTHER_CONTROL), False),
                         pc.fill_null(pc.match_substring_regex(response, _OTHER_CONTROL), False)))
    payload = pc.binary_join_element_wise('{"messages":null,"prompt":', _json_literals(prompt), ',"response":',
                                          _json_literals(response), "}", "")
    digests = [hashlib.sha256(b).hexdigest() for b in payload.cast(pa.binary()).to_pylist()]
    if pc.any(slow).as_py():
        rows = pc.indices_nonzero(slow).to_pylist()
        p, r, m = (col.take(rows).to_pylist() for col in (prompt, response, messages.combine_chunks()))
        for i, row in enumerate(rows):
            digests[row] = _id_of(p[i], r[i], m[i])
    return pa.array(digests, pa.string())


def shard_of(sample_id: str, n_shards: int) -> int:
    """Shard = int(sample_id[:8], 16) % n_shards; independent of the number of workers."""
    return int(sample_id[:8], 16) % n_shards


def shard_indices(ids: pa.Array | pa.ChunkedArray, n_shards: int) -> pa.Array:
    """``shard_of`` over a string array of hex ids."""
    return pa.array([int(s[:8], 16) % n_shards for s in ids.to_pylist()], pa.int32())
