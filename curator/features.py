"""The ``datasets`` features an input declares for its pass-through columns, carried to ``dataset/``.

An input ``datasets`` wrote (a ``save_to_disk`` directory, an Arrow or Parquet file, the data ``curator.apply``
is given) declares its features as JSON in its Arrow schema's ``huggingface`` metadata. The features of the
columns curator passes through unchanged (same values and Arrow type; renamed ``input_<name>`` or
``input<name>``: under the new name) that say more than the Arrow type (a ``ClassLabel``'s names, a
fixed-length list, ...) ride along as JSON under ``KEY`` in the schema metadata of the canonical blocks, the input
shards and the dataset's parts; ``dataset/`` declares them where the column's Arrow type still stores them
(``curator.hf_layout``, else ``datasets`` itself checks). Inputs that declare different features for one column
(or one declares some, another none): none is kept and a warning names the column and the two inputs. Only JSON
is parsed here (``datasets`` takes about a second to import). Inputs that declare nothing change nothing.
"""

from __future__ import annotations

import json

import pyarrow as pa

from curator.hf_layout import plain

KEY = b"curator.features"


def _huggingface(schema: pa.Schema) -> dict[str, dict]:
    """The features ``schema``'s ``huggingface`` metadata declares, by column ({} if none, or not JSON)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else None
    except (ValueError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def carried(schema: pa.Schema) -> dict[str, dict]:
    """The features carried under ``KEY`` in ``schema``'s metadata, by column."""
    raw = (schema.metadata or {}).get(KEY)
    return json.loads(raw) if raw else {}


def with_carried(schema: pa.Schema, features: dict[str, dict]) -> pa.Schema:
    """``schema`` carrying ``features`` (none: without ``KEY``; ``schema`` itself if it had none)."""
    meta = {k: v for k, v in (schema.metadata or {}).items() if k != KEY}
    if not features and len(meta) == len(schema.metadata or {}):
        return schema
    if features:
        meta[KEY] = json.dumps(features).encode()
    return schema.with_metadata(meta) if meta else schema.remove_metadata()


def input_features(schema: pa.Schema, passed: dict[str, str]) -> dict[bytes, bytes]:
    """The metadata carrying an input's features (``schema``: the input's) for the columns it passes through
    unchanged (``passed``: input name -> name in the canonical table): {} if it declares none beyond the types."""
    declared = _huggingface(schema)
    features = {new: declared[old] for old, new in passed.items()
                if old in declared and declared[old] != plain(schema.field(old).type)}
    return {KEY: json.dumps(features).encode()} if features else {}


def merged(schemas: list[tuple[str, pa.Schema]]) -> tuple[dict[str, dict], list[str]]:
    """The features to carry for a table of several inputs' columns (``schemas``: (input, its canonical schema)):
    a column's if every input holding it carries the same; else none, and one line saying which column and why."""
    held: dict[str, list[tuple[str, dict | None]]] = {}
    for label, schema in schemas:
        mine = carried(schema)
        for name in schema.names:
            held.setdefault(name, []).append((label, mine.get(name)))
    features, reasons = {}, []
    for name, declared in held.items():
        (first, feature), other = declared[0], next((d for d in declared if d[1] != declared[0][1]), None)
        if other is None and feature is not None:
            features[name] = feature
        elif other is not None:
            reasons.append(f"column '{name}': inputs {first} and {other[0]} declare different features for it "
                           f"({_shown(feature)} and {_shown(other[1])}); dataset/ keeps its plain type")
    return features, reasons


def _shown(feature: dict | None) -> str:
    text = json.dumps(feature) if feature is not None else "none"
    return text if len(text) <= 120 else text[:117] + "..."


def as_huggingface(table: pa.Table) -> pa.Table:
    """``table`` declaring its carried features as ``datasets`` reads them (``huggingface`` metadata, which
    ``datasets.Features.from_arrow_schema`` checks against the Arrow types); ``table`` if it carries none."""
    features = carried(table.schema)
    if not features:
        return table
    meta = {k: v for k, v in table.schema.metadata.items() if k != KEY}
    return table.replace_schema_metadata({**meta, b"huggingface": json.dumps({"info": {"features": features}})})
