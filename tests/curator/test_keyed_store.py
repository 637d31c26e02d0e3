import hashlib

import pyarrow as pa

from curator.hashing import seeded_order, seeded_rng, sha256_parts, sha256_text
from curator.keyed_store import KeyedStore

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.float64())])


def test_store_keeps_the_first_row_of_a_key_and_is_shared_between_instances(tmp_path):
    a = KeyedStore(tmp_path, "k", SCHEMA)
    a.add([{"k": "x", "v": 1.0}, {"k": "y", "v": 2.0}])
    b = KeyedStore(tmp_path, "k", SCHEMA)  # another worker
    b.add([{"k": "x", "v": 9.0}, {"k": "z", "v": 3.0}])
    assert a.get(["x", "z", "missing"]) == {"x": {"k": "x", "v": 1.0}, "z": {"k": "z", "v": 3.0}}
    assert a.keys() == {"x", "y", "z"}
    b.add([{"k": "x", "v": 5.0}])  # nothing new: no part written
    assert len(list(tmp_path.glob("part-*.parquet"))) == 2


def test_seeded_helpers_are_stable_and_order_free():
    assert sha256_text(0, "a", "b") == hashlib.sha256(b"0\x00a\x00b").hexdigest()
    assert sha256_parts("ab", "c") != sha256_parts("a", "bc")
    keys = ["p", "q", "r", "s"]
    order = seeded_order(3, "pick", keys)
    assert [keys[i] for i in order] == [keys[::-1][i] for i in seeded_order(3, "pick", keys[::-1])]
    assert seeded_rng(1, "x", "k").integers(1 << 30) == seeded_rng(1, "x", "k").integers(1 << 30)
