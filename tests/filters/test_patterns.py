"""The default ``patterns`` count what they name in text a coding or pre-training set holds, and not its look-alikes
(dates, ISBNs, integers, versions, image names, SSH remotes), since recipes drop rows on them."""

from pathlib import Path

import pyarrow as pa
import pytest

from curator.stage import StageContext
from filters.patterns import PatternsParams, PatternsStage

CASES = [  # text, (email, url, phone, ipv4)
    ("Run: git clone git@github.com:me/app.git", (0, 0, 0, 0)),
    ("Use logo@2x.png next to logo.png.", (0, 0, 0, 0)),
    ("mail a.b@example.co.uk or x@y.com.", (2, 0, 0, 0)),
    ("On 2024-01-15 we met; pages 10-20, 12/05/1990", (0, 0, 0, 0)),
    ("ISBN 978-3-16-148410-0", (0, 0, 0, 0)),
    ("1234567890 people, 1700000000 seconds", (0, 0, 0, 0)),
    ("From 1990 - 2000 and 2001 - 2010; values 1 2 3 4 5 6 7 8 9 10", (0, 0, 0, 0)),
    ("call 555-123-4567 or (555) 123-4567 or +44 20 7946 0958 or 555.123.4567 or +14155552671", (0, 0, 5, 0)),
    ("version 10.2.33.4567 and OID 1.3.6.1.4.1.343 and 999.999.999.999", (0, 0, 0, 0)),
    ("host 192.168.0.1, then 10.0.0.1.", (0, 0, 0, 2)),
    ("call 555.123.4567 at 192.168.0.1", (0, 0, 1, 1)),
    ("http://x.com/a HTTPS://EXAMPLE.COM ftp://f.org/x", (0, 3, 0, 0)),
]


@pytest.mark.parametrize("text, want", CASES, ids=[c[0][:30] for c in CASES])
def test_default_patterns_count_what_they_name(text, want):
    batch = pa.RecordBatch.from_pydict({"sample_id": ["s"], "prompt": ["p"], "response": [text]})
    out = PatternsStage(PatternsParams(), StageContext(Path("."), Path("."))).process_batch(batch)
    assert tuple(out.column(f"pat_{n}")[0].as_py() for n in ("email", "url", "phone", "ipv4")) == want


def test_a_users_own_email_pattern_is_counted_as_written():
    batch = pa.RecordBatch.from_pydict({"sample_id": ["s"], "prompt": ["p"], "response": ["logo@2x.png"]})
    params = PatternsParams(patterns={"email": r"\S+@\S+"})
    out = PatternsStage(params, StageContext(Path("."), Path("."))).process_batch(batch)
    assert out.column("pat_email").to_pylist() == [1]
