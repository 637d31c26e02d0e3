"""The metadata ``datasets.Dataset.save_to_disk`` writes for a one-file, unformatted data set, without
importing ``datasets`` (about a second of start-up): ``dataset_info.json``, ``state.json`` and the data file's
Arrow schema with its ``huggingface`` features. Only plain Arrow types (no extension types, no HF metadata
already on the schema) are described here, and of the features an input declared (``curator.features``) those
that are JSON over such types (``ClassLabel``, ``Translation``, lists and dicts of them); anything else returns
None and goes through ``datasets``. tests/curator/test_hf_layout.py checks the files against ``datasets`` itself."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

DATA_FILE = "data-00000-of-00001.arrow"
_VALUES = {pa.null(): "null", pa.bool_(): "bool", pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32",
           pa.int64(): "int64", pa.uint8(): "uint8", pa.uint16(): "uint16", pa.uint32(): "uint32",
           pa.uint64(): "uint64", pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64",
           pa.string(): "string", pa.large_string(): "large_string", pa.binary(): "binary",
           pa.large_binary(): "large_binary"}


class _Unsupported(Exception):
    pass


def _feature(t: pa.DataType) -> tuple[dict, pa.DataType]:
    """(the feature as ``datasets`` serialises it, the Arrow type ``datasets`` stores it as)."""
    if pa.types.is_struct(t):
        items = [(t.field(i).name, _feature(t.field(i).type)) for i in range(t.num_fields)]
        if len({name for name, _ in items}) != len(items):
            raise _Unsupported
        return {n: d for n, (d, _) in items}, pa.struct([pa.field(n, a) for n, (_, a) in items])
    if pa.types.is_list(t) and not pa.types.is_fixed_size_list(t):
        d, a = _feature(t.value_type)
        return {"feature": d, "_type": "List"}, pa.list_(a)
    if pa.types.is_large_list(t):
        d, a = _feature(t.value_type)
        return {"feature": d, "_type": "LargeList"}, pa.large_list(a)
    if t in _VALUES and not isinstance(t, pa.ExtensionType):
        return {"dtype": _VALUES[t], "_type": "Value"}, t
    raise _Unsupported


def plain(t: pa.DataType) -> dict | None:
    """The feature ``datasets`` gives a column of Arrow type ``t`` that declares none (None: only it can tell)."""
    try:
        return _feature(t)[0]
    except _Unsupported:
        return None


def _stored_as(feature: dict) -> dict:
    """The plain feature of the Arrow type ``datasets`` stores ``feature`` (as it serialises it) in; raises
    ``_Unsupported`` for the kinds only ``datasets`` knows (images, arrays, legacy ``Sequence``, other keys)."""
    if not isinstance(feature, dict):
        raise _Unsupported
    kind, keys = feature.get("_type"), set(feature)
    if kind is None:
        return {name: _stored_as(sub) for name, sub in feature.items()}
    if kind == "Value" and keys == {"dtype", "_type"} and feature["dtype"] in _VALUES.values():
        return feature
    if kind == "ClassLabel" and keys == {"names", "_type"}:
        return {"dtype": "int64", "_type": "Value"}
    if kind in ("List", "LargeList") and keys == {"feature", "_type"}:
        return {"feature": _stored_as(feature["feature"]), "_type": kind}
    if kind == "Translation" and keys == {"languages", "_type"}:
        return {lang: {"dtype": "string", "_type": "Value"} for lang in sorted(feature["languages"])}
    raise _Unsupported


def layout(schema: pa.Schema, declared: dict[str, dict] | None = None) -> tuple[pa.Schema, dict] | None:
    """(the data file's schema, the features) for a table of ``schema``, or None if only ``datasets`` can tell.
    ``declared``: features by column that replace the plain ones where the column's Arrow type stores them."""
    if b"huggingface" in (schema.metadata or {}) or len(set(schema.names)) != len(schema.names):
        return None
    try:
        described = [(f.name, _feature(f.type)) for f in schema]
        features = {name: d for name, (d, _) in described}
        for name, feature in (declared or {}).items():
            if name in features and json.dumps(_stored_as(feature)) == json.dumps(features[name]):
                features[name] = feature
    except _Unsupported:
        return None
    arrow = pa.schema([pa.field(name, a) for name, (_, a) in described])
    return arrow.with_metadata({"huggingface": json.dumps({"info": {"features": features}})}), features


def write_metadata(path: Path, features: dict, fingerprint: str) -> None:
    """``state.json`` and ``dataset_info.json`` as ``save_to_disk`` writes them."""
    state = {"_fingerprint": fingerprint, "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": None, "_data_files": [{"filename": DATA_FILE}]}
    with open(path / "state.json", "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    with open(path / "dataset_info.json", "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
