import pytest

from curator.errors import RecipeError
from curator.recipe import load_recipe

BASE = """
curator: 1
name: r
inputs: [{path: data.jsonl}]
stages:
  - use: normalize
  - use: quality
  - use: decide
    with: {drop_if: ["char_len > 10"]}
"""


def test_valid_recipe_and_canonical_hash(tmp_path):
    (tmp_path / "data.jsonl").write_text("")
    r1 = load_recipe(BASE, tmp_path)
    r2 = load_recipe(BASE.replace("name: r", "name: r  # comment"), tmp_path)
    assert r1.sha256() == r2.sha256()
    assert r1.stages[2].params.drop_if == ("char_len > 10",)
    assert load_recipe(BASE.replace("> 10", "> 11"), tmp_path).sha256() != r1.sha256()


@pytest.mark.parametrize("change,expected", [
    (("quality", "qualty"), r"stages\[1\]\.use: unknown stage 'qualty'; known stages are \[.*'quality'"),
    (("{drop_if:", "{drop_iff:"), r"stages\[2\]\.with\.drop_iff: unknown parameter; valid parameters are "
                                  r"\['drop_if', 'flag_if', 'reason'\]"),
    (("name: r", "name: r\nshards: many"), r"shards: expected int, got 'many'"),
    (("name: r", "name: r\nexecutor: {workers: two}"), r"executor\.workers: expected int"),
    (("name: r", "name: r\nmodle: default"), r"modle: unknown key"),
    (("  - use: normalize", "  - use: normalize\n    with: {on_bad_row: drop}"),
     r"stages\[0\]\.with\.on_bad_row: expected one of 'quarantine' \| 'fail', got 'drop'"),
    (("curator: 1", "curator: 7"), r"unsupported recipe version"),
])
def test_each_mistake_names_its_location(tmp_path, change, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(BASE.replace(*change), tmp_path)


def test_all_problems_reported_at_once(tmp_path):
    text = BASE.replace("quality", "qualty").replace("name: r", "name: r\nshards: x")
    with pytest.raises(RecipeError) as err:
        load_recipe(text, tmp_path)
    assert "2 problem(s)" in str(err.value)


def test_yaml_aliases_and_tags_refused(tmp_path):
    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n' + BASE
    with pytest.raises(RecipeError, match="aliases"):
        load_recipe(bomb, tmp_path)
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(BASE + "x: !!python/object/apply:os.system ['echo hi']\n", tmp_path)


def test_paths_confined_to_allowed_roots(tmp_path, monkeypatch):
    inner = tmp_path / "proj"
    inner.mkdir()
    monkeypatch.chdir(inner)
    (tmp_path / "secret.jsonl").write_text("")
    rec = load_recipe(BASE.replace("data.jsonl", "../secret.jsonl"), inner)
    with pytest.raises(RecipeError, match="outside the allowed roots"):
        rec.input_paths()
    (inner / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    with pytest.raises(RecipeError, match="outside the allowed roots"):
        load_recipe(BASE.replace("data.jsonl", "link.jsonl"), inner).input_paths()
    with pytest.raises(RecipeError, match="outside the allowed roots"):
        load_recipe(BASE.replace("data.jsonl", "/etc/passwd"), inner).input_paths()
    monkeypatch.setenv("CURATOR_ALLOWED_ROOTS", str(tmp_path))
    assert rec.input_paths()[0] == (tmp_path / "secret.jsonl").resolve()


def test_exactly_one_registered_stage_runs_at_ingest(monkeypatch):
    from dataclasses import dataclass

    from curator import registry
    from curator.stage import Stage

    assert registry.ingest_stage().name == "normalize"

    @dataclass(frozen=True)
    class P:
        on_bad_row: str = "quarantine"
        dedupe: bool = True

    class OtherIngest(Stage):
        name, kind, Params = "test.other_ingest", "ingest", P

    monkeypatch.setitem(registry._LOCAL, OtherIngest.name, OtherIngest)
    with pytest.raises(RecipeError, match=r"exactly one registered stage must have kind 'ingest'.*"
                                          r"\['normalize', 'test.other_ingest'\]"):
        registry.ingest_stage()

    class NotIngest(Stage):
        name = "normalize"

    monkeypatch.setattr(registry, "_LOCAL", {"normalize": NotIngest})
    with pytest.raises(RecipeError, match=r"must have kind 'ingest'.*found none"):
        registry.ingest_stage()


def test_base_dir_may_be_a_string(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    rec = load_recipe({"curator": 1, "name": "s", "inputs": [{"path": "d.jsonl"}], "stages": [{"use": "normalize"}]},
                      base_dir=str(tmp_path))
    assert rec.base_dir == tmp_path and rec.input_paths() == [tmp_path / "d.jsonl"]
