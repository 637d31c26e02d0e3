"""Every shipped recipe validates (the demo's inputs resolve; the others use placeholder paths)."""

import subprocess
import sys
from pathlib import Path

import pytest

from curator.recipe import load_recipe

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


def test_all_shipped_recipes_are_present():
    assert {p.name for p in RECIPES} >= {"demo.yaml", "sft-safety.yaml", "pretrain-gate.yaml", "paper-replication.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_curator_validate_passes(path):
    res = subprocess.run([sys.executable, "-m", "curator.cli", "validate", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok:")


def test_demo_recipe_inputs_resolve():
    rec = load_recipe(Path(__file__).parents[2] / "recipes" / "demo.yaml")
    assert [str(p) for p in rec.input_paths()] == ["builtin:demo_pool", "builtin:advbench"]
