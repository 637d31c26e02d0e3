"""Exit codes: ``gate``'s 1 means a failed rule and nothing else; recipe mistakes (``output.scores`` naming a column
no stage provides, ``--workers 0``, ``gate RUN -o``) are exit 2, found before any work; API errors name what is
wrong with the path."""

import json

import pytest
from click.testing import CliRunner

import curator
from curator.cli.main import main
from curator.errors import InputError, RecipeError
from tests.support import synthetic_rows, write_jsonl

STAGES = [{"use": "normalize"}, {"use": "quality"}]
GATE = [{"name": "few_dups", "sql": "frac(is_duplicate) < 0.5"}]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _recipe(base, name="r", **top):
    write_jsonl(base / "d.jsonl", synthetic_rows(20))
    path = base / f"{name}.yaml"
    path.write_text(json.dumps({"curator": 1, "name": name, "inputs": [{"path": "d.jsonl"}], "shards": 2,
                                "stages": STAGES, "gate": GATE, **top}))
    return path


def test_output_scores_naming_no_stage_column_is_a_recipe_error_before_any_work(tmp_path):
    recipe = _recipe(tmp_path, output={"format": "messages", "scores": ["char_len", "risk_sqsd"]})
    for command in (["run", recipe], ["gate", "--recipe", recipe, "-q"]):
        res = cli(*command, "-o", tmp_path / "out")
        assert res.exit_code == 2, res.output
        assert "output.scores: no score stage of this recipe provides ['risk_sqsd']" in res.stderr
        assert "char_len" in res.stderr and not (tmp_path / "out").exists()
    with pytest.raises(RecipeError, match=r"provides \['risk_sqsd'\]"):
        curator.run(recipe, tmp_path / "api", quiet=True)


def test_gate_recipe_exits_2_when_the_run_fails_and_1_only_for_a_failed_rule(tmp_path):
    text_on_pairs = _recipe(tmp_path, "t", output={"format": "text"})  # prompt/response rows in a `text` dataset
    res = cli("gate", "--recipe", text_on_pairs, "-q", "-o", tmp_path / "t-run")
    assert res.exit_code == 2 and "output format 'text'" in res.stderr
    failing = _recipe(tmp_path, "f", gate=[{"name": "none", "sql": "n_rows() = 0"}])
    res = cli("gate", "--recipe", failing, "-q", "-o", tmp_path / "f-run")
    assert res.exit_code == 1 and "FAIL  none" in res.stderr


def test_gate_recipe_exits_2_with_the_traceback_of_an_unexpected_error(tmp_path, monkeypatch):
    import curator.pipeline

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(curator.pipeline, "run", broken)
    res = cli("gate", "--recipe", _recipe(tmp_path), "-q", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "Traceback" in res.stderr and "ValueError: a bug" in res.stderr


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_workers_below_one_are_a_usage_error(tmp_path, workers):
    recipe = _recipe(tmp_path)
    for command in (["run", recipe], ["gate", "--recipe", recipe]):
        res = cli(*command, "--workers", workers, "-o", tmp_path / "out")
        assert res.exit_code == 2 and "Invalid value for '--workers'" in res.stderr
    assert not (tmp_path / "out").exists()


def test_gate_of_a_run_directory_says_which_options_need_recipe(tmp_path):
    recipe = _recipe(tmp_path)
    assert cli("run", recipe, "-q", "-o", tmp_path / "run").exit_code == 0
    for option in (["-o", tmp_path / "x"], ["--workers", "2"]):
        res = cli("gate", tmp_path / "run", *option)
        assert res.exit_code == 2 and "needs --recipe" in res.stderr and "give exactly one" not in res.stderr
    assert cli("gate", tmp_path / "run", "-q").exit_code == 0


def test_api_on_a_missing_run_directory_says_it_does_not_exist(tmp_path):
    with pytest.raises(InputError, match=r"nope: does not exist; give a run directory"):
        curator.RunResult.load(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"file: is not a directory"):
        curator.RunResult.load(tmp_path / "file")


def test_allowed_roots_error_lists_each_root_once(tmp_path, monkeypatch):
    (tmp_path / "outside.jsonl").write_text("{}\n")
    project = tmp_path / "project"
    project.mkdir()
    recipe = project / "r.yaml"
    recipe.write_text(json.dumps({"curator": 1, "name": "r", "inputs": [{"path": "../outside.jsonl"}],
                                  "stages": STAGES}))
    monkeypatch.chdir(project)  # the recipe's directory is the working directory
    monkeypatch.delenv("CURATOR_ALLOWED_ROOTS", raising=False)
    res = cli("run", recipe, "-o", project / "out")
    assert res.exit_code == 2 and f"outside the allowed roots ({project}). " in res.stderr
