"""The stage written out in docs/architecture.md works as documented (and stays under 50 lines)."""

import re
import types
from pathlib import Path

import datasets

from curator.pipeline import run
from curator.registry import register
from tests.support import write_jsonl, write_recipe

DOC = Path(__file__).parents[2] / "docs" / "architecture.md"


def test_documented_stage_runs_in_a_recipe_and_a_rule(tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.S).group(1)
    assert len(code.strip().splitlines()) < 50
    module = types.ModuleType("doc_stage")
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    register(module.RepetitionStage)
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "say hi", "response": "hi " * 30},
                                       {"prompt": "explain", "response": "water boils at one hundred degrees"}])
    stages = [{"use": "normalize"}, {"use": "repetition"}, {"use": "decide", "with": {"drop_if": ["repetition > 0.5"]}}]
    res = run(write_recipe(tmp_path, ["d.jsonl"], stages, shards=1), tmp_path / "run", quiet=True)
    assert res.counts["dropped"] == 1
    kept = datasets.load_from_disk(str(tmp_path / "run" / "dataset")).to_list()
    assert [r["response"] for r in kept] == ["water boils at one hundred degrees"]
