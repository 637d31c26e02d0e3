"""curator.hf_layout writes the files ``datasets`` writes (the run's dataset directory without importing it)."""

import pyarrow as pa
import pytest

from curator import hf_layout
from curator.finalize import _save_to_disk

TABLES = {
    "canonical": pa.table({"sample_id": ["a", "b"], "prompt": ["p", None], "response": ["r", "ß ✓"],
                           "messages": pa.array([[{"role": "user", "content": "x"}], None],
                                                pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                           "source": ["s", "s"]}),
    "numbers": pa.table({"i8": pa.array([1, 2], pa.int8()), "u64": pa.array([1, 2], pa.uint64()),
                         "f16": pa.array([1, 2], pa.float16()), "f32": pa.array([1.5, 2], pa.float32()),
                         "f64": [0.1, None], "b": [True, False], "n": pa.nulls(2)}),
    "nested": pa.table({"ll": pa.array([[[1]], []], pa.list_(pa.list_(pa.int32()))),
                        "big": pa.array([["x"], None], pa.large_list(pa.large_string())),
                        "bin": pa.array([b"\x00", b""], pa.binary()), "ünïcode name": ["1", "2"],
                        "s": pa.array([{"a": {"b": 1}}, None], pa.struct([("a", pa.struct([("b", pa.int64())]))]))}),
    "element lists": pa.table({"l": pa.array([[1], [2, 3]], pa.list_(pa.field("element", pa.int64(), nullable=False)))}),
    "other metadata": pa.table({"a": ["x"]}).replace_schema_metadata({"pandas": "{}"}),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_metadata_and_data_file_are_what_datasets_writes(name, tmp_path):
    table = TABLES[name]
    assert hf_layout.layout(table.schema) is not None
    _save_to_disk(table, tmp_path / "ours", "fp123")
    _save_to_disk(table, tmp_path / "datasets", "fp123", use_datasets=True)
    for f in ("dataset_info.json", "state.json", hf_layout.DATA_FILE):
        assert (tmp_path / "ours" / f).read_bytes() == (tmp_path / "datasets" / f).read_bytes(), f
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == sorted(p.name for p in (tmp_path / "datasets").iterdir())


def test_types_it_cannot_describe_are_left_to_datasets():
    for t in (pa.timestamp("s"), pa.dictionary(pa.int8(), pa.string()), pa.list_(pa.int8(), 3), pa.decimal128(5, 2)):
        assert hf_layout.layout(pa.schema([("x", t)])) is None
    assert hf_layout.layout(pa.schema([("x", pa.string())], metadata={"huggingface": "{}"})) is None


def test_declared_features_are_written_as_datasets_writes_them(tmp_path):
    """Features an input declared (``curator.features``): those over plain types as ``datasets`` writes them,
    one the column's type no longer stores left out (``s``), other kinds left to ``datasets``."""
    from curator.features import with_carried

    table = pa.table({"label": [0, 1], "tags": pa.array([[0], []], pa.list_(pa.field("element", pa.int64()))),
                      "tr": pa.array([{"en": "a", "fr": "b"}] * 2, pa.struct([("en", pa.string()), ("fr", pa.string())])),
                      "s": ["x", "y"]})
    features = {"label": {"names": ["neg", "pos"], "_type": "ClassLabel"},
                "tags": {"feature": {"names": ["a"], "_type": "ClassLabel"}, "_type": "List"},
                "tr": {"languages": ["fr", "en"], "_type": "Translation"}, "s": {"names": ["x"], "_type": "ClassLabel"}}
    table = table.replace_schema_metadata(with_carried(table.schema, features).metadata)
    assert hf_layout.layout(table.schema, features)[1] == {**features, "s": {"dtype": "string", "_type": "Value"}}
    _save_to_disk(table, tmp_path / "ours", "fp123")
    _save_to_disk(table, tmp_path / "datasets", "fp123", use_datasets=True)
    for f in ("dataset_info.json", "state.json", hf_layout.DATA_FILE):
        assert (tmp_path / "ours" / f).read_bytes() == (tmp_path / "datasets" / f).read_bytes(), f
    image = pa.schema([("img", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    assert hf_layout.layout(image, {"img": {"_type": "Image"}}) is None
