"""The byte-level kernels equal their definitions (str.split/join and Arrow's lower, hashlib, json.dumps) on tricky
text."""

import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curator.samples import _json_literals
from curator.strings import any_per_row, buffers, count_byte, count_per_row, fold_lower, hex_digests

PIECES = ["a", "B", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\u0085", "\u00a0", "\u1680",
          "\u2003", "\u2028", "\u202f", "\u205f", "\u3000", "\u200b", "İ", "ẞ", "Σ", "é", "日", "\u00c2", "x1", "\"", "\\"]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    fixed = ["", " ", "  ", "   ", "a", " a", "a ", "a  ", "\u3000", "\u3000\u3000", "a\u3000", "a \u3000", "\u3000 a"]
    return fixed + ["".join(rng.choices(PIECES, k=rng.randint(0, 14))) for _ in range(n)]


def test_fold_lower_equals_its_definition_part_by_part():
    texts = _texts(20000) + ["a \x00 b", "\x00", " \x00 ", "a\x00\x00b ", "\u3000\x00x", "x\u2003\x00"]
    texts += ["".join(random.Random(3).choices([*PIECES, "\x00"], k=9)) for _ in range(3000)]
    arr = pa.array(texts, pa.string())
    folded = pa.array(["\x00".join(" ".join(p.split()) for p in t.split("\x00")) for t in texts], pa.string())
    want = pc.utf8_lower(folded)
    assert fold_lower(arr).to_pylist() == want.to_pylist()
    assert fold_lower(arr.slice(17, 500)).to_pylist() == want.slice(17, 500).to_pylist()
    assert fold_lower(pa.array(["a  b ", None, "  "], pa.string())).to_pylist() == ["a b", "", ""]


@pytest.mark.parametrize("algo,chars", [("sha256", 64), ("sha1", 16)])
def test_hex_digests_equal_hashlib(algo, chars):
    texts = _texts(500, seed=1)
    got = hex_digests(pa.array(texts, pa.string()).slice(3), algo, chars).to_pylist()
    assert got == [getattr(hashlib, algo)(t.encode()).hexdigest()[:chars] for t in texts[3:]]
    assert hex_digests(pa.array([], pa.string())).to_pylist() == []


def test_counts_per_row():
    texts = _texts(3000, seed=2)
    arr = pa.array(texts + [None], pa.string())
    assert count_byte(arr, 10).tolist() == [t.count("\n") for t in texts] + [0]
    data, offsets = buffers(pc.fill_null(arr, ""))
    assert count_per_row(data == 32, offsets).tolist() == [t.encode().count(b" ") for t in texts] + [0]
    assert any_per_row(data == 32, offsets).tolist() == [" " in t for t in texts] + [False]


def test_json_literals_equal_json_dumps_and_flag_other_control_characters():
    texts = _texts(3000, seed=3) + ["nul \x00", "bell \x07", "\b\f", "del \x7f", None]
    literals, other = _json_literals(pa.array(texts, pa.string()))
    for text, lit, flag in zip(texts, literals.to_pylist(), other.tolist()):
        control = text is not None and any(c < " " and c not in "\t\n\r" for c in text)
        assert flag == control
        if not control:
            assert lit == json.dumps(text, ensure_ascii=False)
    assert isinstance(other, np.ndarray)
