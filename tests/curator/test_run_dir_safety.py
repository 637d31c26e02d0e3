"""A run never deletes files outside its own run directory, nor the user's files in a folder it did not make."""

import pandas as pd
import pytest

import curator
from curator.errors import RecipeError
from curator.pipeline import run
from curator.recipe import load_recipe
from tests.support import synthetic_rows, write_jsonl, write_recipe

STAGES = [{"use": "normalize"}, {"use": "quality"}]


@pytest.mark.parametrize("stage_id", ["../..", "a/b", ".hidden", "..", "", 5])
def test_a_stage_id_that_is_not_one_folder_name_is_refused(tmp_path, stage_id):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    recipe = write_recipe(tmp_path, ["d.jsonl"], [*STAGES, {"use": "patterns", "id": stage_id}])
    with pytest.raises(RecipeError, match=r"stages\[2\]\.id: .* is not a valid stage id"):
        load_recipe(recipe)


def test_a_stage_id_with_dots_cannot_delete_the_run_directorys_parents(tmp_path):
    """The reported attack: a rerun with ``id: ../..`` removed ``scores/../..``, the run's parent."""
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    canary = tmp_path / "a" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text("keep me")
    run(write_recipe(tmp_path, ["d.jsonl"], STAGES, shards=2), tmp_path / "a" / "run", quiet=True)
    with pytest.raises(RecipeError, match="not a valid stage id"):
        run(write_recipe(tmp_path, ["d.jsonl"], [*STAGES, {"use": "patterns", "id": "../.."}], shards=2),
            tmp_path / "a" / "run", quiet=True)
    assert canary.read_text() == "keep me"


@pytest.mark.parametrize("name", ["../../escaped", "..", "a/b", " spaced"])
def test_a_run_name_that_is_not_one_folder_name_is_refused(tmp_path, name):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    with pytest.raises(RecipeError, match=r"name: .* is not a valid run name"):
        load_recipe(write_recipe(tmp_path, ["d.jsonl"], STAGES, name=name))


@pytest.mark.parametrize("params", [[1, 2], "x", 5])
def test_stage_parameters_that_are_not_a_mapping_are_a_recipe_error(tmp_path, params):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    recipe = write_recipe(tmp_path, ["d.jsonl"], [STAGES[0], {"use": "quality", "with": params}])
    with pytest.raises(RecipeError, match=r"stages\[1\]\.with: expected a mapping of parameters"):
        load_recipe(recipe)


def test_a_folder_of_the_users_files_is_not_adopted_as_a_run_directory(tmp_path):
    """``-o .`` in a project whose data sits in ``input/`` used to delete that data."""
    project = tmp_path / "project"
    (project / "input").mkdir(parents=True)
    data = write_jsonl(project / "input" / "train.jsonl", synthetic_rows(20))
    notes = project / "dataset" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    recipe = write_recipe(project, ["input/train.jsonl"], STAGES, shards=2)
    with pytest.raises(RecipeError, match="not a curator run directory.*new or empty directory"):
        run(recipe, project, quiet=True)
    assert data.exists() and notes.read_text() == "mine"
    with pytest.raises(RecipeError, match="is not a directory"):
        run(recipe, data, quiet=True)


def test_an_empty_folder_and_an_earlier_run_directory_are_used(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    recipe = write_recipe(tmp_path, ["d.jsonl"], STAGES, shards=2)
    (tmp_path / "empty").mkdir()
    first = run(recipe, tmp_path / "empty", quiet=True)
    again = run(recipe, tmp_path / "empty", quiet=True)
    assert again.digest == first.digest and again.counts == first.counts


def test_apply_refuses_a_folder_of_the_users_files_and_accepts_its_own_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    frame = pd.DataFrame({"prompt": ["hi there", "what is 2+2"], "response": ["hello to you", "it is 4"]})
    with pytest.raises(RecipeError, match="not a curator run directory"):
        curator.apply(frame, stages=["quality"], run_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"
    first = curator.apply(frame, stages=["quality"], run_dir=tmp_path / "run")
    again = curator.apply(frame, stages=["quality"], run_dir=tmp_path / "run")
    assert first["char_len"] == again["char_len"] and len(again) == 2
