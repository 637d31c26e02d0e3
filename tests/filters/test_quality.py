"""The quality stage's fast Python path equals its Arrow definition, on tricky text too."""

import hashlib
import random

import pyarrow as pa
import pyarrow.compute as pc

from filters.quality import _normalised

PIECES = ["a", "B", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0", "\u2003", "İ", "ß", "é", "x1",
          "```", "-", ""]


def _arrow_definition(text: pa.Array) -> tuple[list[str], list[int]]:
    words = pc.utf8_split_whitespace(text)
    norm = pc.utf8_lower(pc.binary_join(words, " ")).to_pylist()
    return [hashlib.sha1(t.encode()).hexdigest()[:16] for t in norm], pc.list_value_length(words).to_pylist()


def test_fast_norm_hash_and_word_count_equal_the_arrow_definition():
    rng = random.Random(0)
    texts = ["", " ", "   ", "\n", "a", " a", "a ", "  a  b  ", "\x1ca\x1d", "A\u00a0b", "İ x"]
    texts += ["".join(rng.choices(PIECES, k=rng.randint(0, 12))) for _ in range(3000)]
    arr = pa.array(texts, pa.string())
    hashes, counts = _normalised(arr)
    assert (hashes.to_pylist(), counts.to_pylist()) == _arrow_definition(arr)
    ascii_only = pa.array([t for t in texts if t.isascii() and t.strip()], pa.string())
    hashes, counts = _normalised(ascii_only)  # the all-fast path
    assert (hashes.to_pylist(), counts.to_pylist()) == _arrow_definition(ascii_only)
