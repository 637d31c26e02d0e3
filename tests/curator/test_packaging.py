"""The light core: reading a finished run (query, gate, verify, status, report) imports no torch, and a wheel built
from the repository installs as ``safety-curator`` without torch and gates an existing run (slow: a real venv)."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from curator.pipeline import run
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

REPO = Path(__file__).parents[2]
HEAVY = ("torch", "transformers", "sklearn", "gguf", "safetensors")
GATE = [{"name": "few_dups", "sql": "frac(is_duplicate) < 0.5"}, {"name": "none_quarantined", "sql": "n_quarantined() = 0"}]
# Runs the CLI with the heavy packages made unimportable: any import of them fails the command.
BLOCKED = """
import sys
from importlib.abc import MetaPathFinder
class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {heavy!r}:
            raise ImportError(f"{{name}} is blocked: the light path must not import it")
sys.meta_path.insert(0, Block())
from curator.cli.main import main
main({args!r})
"""


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("light")
    write_jsonl(base / "d.jsonl", synthetic_rows(40))
    return run(write_recipe(base, ["d.jsonl"], ENGINE_STAGES, shards=2, gate=GATE), base / "run", quiet=True).run_dir


def _blocked(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = BLOCKED.format(heavy=HEAVY, args=args)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("args", [["gate", "{run}"], ["verify", "{run}"], ["status", "{run}"], ["report", "{run}"],
                                  ["query", "{run}", "SELECT count(*) AS n FROM scores", "--format", "json"]])
def test_reading_a_run_imports_no_model_package(engine_run, args):
    res = _blocked([a.format(run=engine_run) for a in args], engine_run.parent)
    assert res.returncode == 0, res.stderr[-2000:]


def test_light_core_dependencies_exclude_the_model_stack():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert project["name"] == "safety-curator" and project["license"] == "Apache-2.0"
    assert not any(pkg in core for pkg in ("torch", "transformers", "scikit-learn", "gguf", "matplotlib>=4"))
    assert {"torch", "transformers", "scikit-learn", "gguf"} <= {d.split(">")[0] for d in
                                                                 project["optional-dependencies"]["models"]}
    assert "models" in (REPO / ".ci" / "install").read_text() and (REPO / "LICENSE").read_text().startswith(
        "\n                                 Apache License")


@pytest.mark.slow
def test_wheel_installs_as_safety_curator_without_torch_and_gates_a_run(engine_run, tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                   check=True, timeout=600)
    (wheel,) = dist.glob("safety_curator-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    bin_ = tmp_path / "venv" / "bin"
    subprocess.run([bin_ / "python", "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=1800)
    version = subprocess.run([bin_ / "curator", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "curator (safety-curator) 0.1.0"
    assert subprocess.run([bin_ / "python", "-c", "import torch"], capture_output=True).returncode != 0
    gate = subprocess.run([bin_ / "curator", "gate", str(engine_run)], capture_output=True, text=True, cwd=tmp_path)
    assert gate.returncode == 0, gate.stderr
    assert json.loads(gate.stdout)["passed"] and [r["name"] for r in json.loads(gate.stdout)["rules"]] == ["few_dups",
                                                                                                          "none_quarantined"]
    for command in (["verify", str(engine_run)], ["status", str(engine_run)], ["report", str(engine_run)]):
        assert subprocess.run([bin_ / "curator", *command], capture_output=True, cwd=tmp_path).returncode == 0
    # a model-free recipe runs too
    (tmp_path / "d.jsonl").write_bytes((engine_run.parent / "d.jsonl").read_bytes())
    recipe = write_recipe(tmp_path, ["d.jsonl"], ENGINE_STAGES, shards=2)
    ran = subprocess.run([bin_ / "curator", "run", str(recipe), "-o", str(tmp_path / "run2"), "-q"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
