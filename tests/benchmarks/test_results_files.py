"""Committed benchmark results hold no paths of the machine that produced them."""

import re
from pathlib import Path

RESULTS = Path(__file__).parents[2] / "benchmarks"


def test_results_hold_no_absolute_machine_paths():
    files = [*RESULTS.glob("results/*"), RESULTS / "RESULTS.md"]
    found = {f.name: m for f in files if (m := re.findall(r"(?<![\w$])/(?:tmp|root|home|work)/\S+", f.read_text("utf-8")))}
    assert not found, found
