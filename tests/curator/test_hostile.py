"""Malformed files give a clear error or quarantined rows; never a bare traceback or a lost row."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curator.errors import InputError
from curator.pipeline import run
from tests.support import write_recipe

BAD = Path(__file__).parents[1] / "data" / "hostile"


def _run(tmp_path, name, fmt="auto", **normalize):
    shutil.copy(BAD / name, tmp_path / name)
    stages = [{"use": "normalize", "with": normalize} if normalize else {"use": "normalize"}, {"use": "quality"}]
    recipe = write_recipe(tmp_path, [name], stages, shards=2)
    if fmt != "auto":
        text = recipe.read_text().replace(f"path: {name}", f"path: {name}\n  format: {fmt}")
        recipe.write_text(text)
    return run(recipe, tmp_path / "run", quiet=True)


def _quarantine(tmp_path):
    return pq.read_table(str(tmp_path / "run" / "quarantine")).to_pylist()


def test_broken_json_lines_and_wrong_types_are_quarantined(tmp_path):
    res = _run(tmp_path, "broken_lines.jsonl")
    assert res.counts["rows_in"] == 6
    assert res.counts["kept"] == 2 and res.counts["quarantined"] == 4
    reasons = {q["input_row"]: q["reason"] for q in _quarantine(tmp_path)}
    assert reasons[1].startswith("invalid JSON")
    assert reasons[2] == "column 'prompt' has a int value, expected a string"
    assert reasons[3] == "empty response"
    assert "expected an object" in reasons[4]


def test_invalid_utf8_line_is_quarantined(tmp_path):
    res = _run(tmp_path, "invalid_utf8.jsonl")
    assert res.counts == {**res.counts, "kept": 1, "quarantined": 1}
    assert _quarantine(tmp_path)[0]["reason"].startswith("invalid UTF-8")


def test_empty_file_gives_an_empty_but_valid_run(tmp_path):
    res = _run(tmp_path, "empty.jsonl", fmt="prompt_response")
    assert res.counts["rows_in"] == 0 and res.manifest["dataset"]["rows"] == 0


def test_messages_rows_checked_turn_by_turn(tmp_path):
    res = _run(tmp_path, "messages_mixed.jsonl")
    assert res.counts["kept"] == 1 and res.counts["quarantined"] == 3
    reasons = sorted(q["reason"] for q in _quarantine(tmp_path))
    assert any("unknown role 'wizard'" in r for r in reasons)
    assert any("last turn must be the assistant" in r for r in reasons)
    assert any("non-empty list" in r for r in reasons)


def test_csv_with_quotes_newlines_and_empty_prompt(tmp_path):
    res = _run(tmp_path, "sample.csv")
    assert res.counts["kept"] == 2 and res.counts["quarantined"] == 1
    assert _quarantine(tmp_path)[0]["reason"] == "empty prompt"


def test_on_bad_row_fail_names_file_and_row(tmp_path):
    with pytest.raises(InputError, match=r"broken_lines.jsonl: row 1 \(0-based\): invalid JSON.*on_bad_row"):
        _run(tmp_path, "broken_lines.jsonl", on_bad_row="fail")


def test_oversized_row_is_quarantined_with_reason(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"prompt": "p", "response": "x" * 5000}) + "\n" + json.dumps({"prompt": "p", "response": "ok"}) + "\n")
    recipe = write_recipe(tmp_path, ["big.jsonl"], [{"use": "normalize", "with": {"max_chars": 1000}}], shards=1)
    res = run(recipe, tmp_path / "run", quiet=True)
    assert res.counts["quarantined"] == 1
    q = _quarantine(tmp_path)[0]
    assert "max_chars=1000" in q["reason"] and "x" * 100 in q["raw"]


def test_unknown_layout_is_a_usage_error_on_the_cli(tmp_path):
    shutil.copy(BAD / "unknown_columns.jsonl", tmp_path / "u.jsonl")
    recipe = write_recipe(tmp_path, ["u.jsonl"], [{"use": "normalize"}], shards=1)
    res = subprocess.run([sys.executable, "-m", "curator.cli", "run", str(recipe), "-o", str(tmp_path / "r"), "-q"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2
    assert "u.jsonl" in res.stderr and "['answer', 'question']" in res.stderr and "Traceback" not in res.stderr


def test_missing_input_is_a_usage_error(tmp_path):
    recipe = write_recipe(tmp_path, ["nope.jsonl"], [{"use": "normalize"}], shards=1)
    res = subprocess.run([sys.executable, "-m", "curator.cli", "run", str(recipe), "-o", str(tmp_path / "r"), "-q"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "nope.jsonl: input not found" in res.stderr


def test_control_characters_are_stripped_and_the_row_kept(tmp_path):
    res = _run(tmp_path, "control_chars.jsonl")
    assert res.counts["kept"] == 1
    row = pq.read_table(str(tmp_path / "run" / "input")).to_pylist()[0]
    assert row["prompt"] == "bell and nul and esc[31m" and row["response"] == "tab\tnew\nline ok"


def test_conversation_turns_are_normalised_like_prompts_and_responses(tmp_path):
    """The turns a trainer reads get the same NFC and control-character stripping as prompt and response."""
    turns = [{"role": "system", "content": "be\x07 brief"}, {"role": "user", "content": "cafe\u0301?"},
             {"role": "assistant", "content": "the bell\x07 rings"}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": turns}) + "\n", "utf-8")
    run(write_recipe(tmp_path, ["chat.jsonl"], [{"use": "normalize"}], shards=1), tmp_path / "run", quiet=True)
    row = pq.read_table(str(tmp_path / "run" / "input")).to_pylist()[0]
    assert [t["content"] for t in row["messages"]] == ["be brief", "caf\u00e9?", "the bell rings"]
    assert row["prompt"] == "caf\u00e9?" and row["response"] == "the bell rings"


def test_extra_columns_pass_through_to_the_dataset(tmp_path):
    import datasets

    _run(tmp_path, "extra_columns.jsonl")
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    rows = sorted(ds.to_list(), key=lambda r: r["prompt"])
    assert [r["meta"] for r in rows] == [{"k": [1, 2]}, {"k": []}] and [r["score"] for r in rows] == [0.5, 1.5]


def test_duplicate_rows_are_dropped_with_their_positions(tmp_path):
    res = _run(tmp_path, "duplicates.jsonl")
    assert res.counts["rows_in"] == 4 and res.counts["kept"] == 2 and res.counts["dropped"] == 2
    ledger = pq.read_table(str(tmp_path / "run" / "ledger")).to_pylist()
    assert sorted(r["input_row"] for r in ledger if r["reason"] == "duplicate") == [2, 3]


def test_ten_megabyte_prompt_is_quarantined_not_loaded_into_the_pipeline(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"prompt": "A" * 10_000_000, "response": "r"}) + "\n"
                    + json.dumps({"prompt": "small", "response": "r"}) + "\n")
    recipe = write_recipe(tmp_path, ["huge.jsonl"], [{"use": "normalize"}, {"use": "quality"}], shards=1)
    res = run(recipe, tmp_path / "run", quiet=True)
    assert res.counts == {**res.counts, "kept": 1, "quarantined": 1}
    q = _quarantine(tmp_path)[0]
    assert "too large" in q["reason"] and q["raw_truncated"] and len(q["raw"]) == 65536


@pytest.mark.parametrize("recipe_file,expected", [
    ("alias_bomb.yaml", "YAML aliases"),
    ("unknown_tag.yaml", "not valid YAML"),
    ("escape_path.yaml", "outside the allowed roots"),
    ("import_path.yaml", "unknown stage 'os.system'"),
])
def test_hostile_recipes_are_refused_with_exit_2(tmp_path, recipe_file, expected):
    shutil.copy(BAD / recipe_file, tmp_path / recipe_file)
    (tmp_path / "data.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    res = subprocess.run([sys.executable, "-m", "curator.cli", "run", recipe_file, "-o", "r", "-q"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr
    assert not Path("/tmp/pwned").exists()


def test_model_directory_asking_for_remote_code_is_refused(tmp_path):
    from curator.ml.models import resolve_model

    with pytest.raises(InputError, match="remote code"):
        resolve_model(str(BAD / "remote_code_model"))


def test_input_limit_keeps_the_first_rows_counting_bad_ones(tmp_path):
    shutil.copy(BAD / "broken_lines.jsonl", tmp_path / "b.jsonl")
    recipe = write_recipe(tmp_path, ["b.jsonl"], [{"use": "normalize"}], shards=1)
    recipe.write_text(recipe.read_text().replace("path: b.jsonl", "path: b.jsonl\n  limit: 3"))
    res = run(recipe, tmp_path / "run", quiet=True)
    assert res.counts["rows_in"] == 3 and res.counts["kept"] == 1 and res.counts["quarantined"] == 2


def test_input_sample_is_seeded_and_keeps_input_order(tmp_path):
    from tests.support import synthetic_rows, write_jsonl

    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(100))
    recipe = write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"}], shards=1)
    recipe.write_text(recipe.read_text().replace("path: d.jsonl", "path: d.jsonl\n  sample: 10\n  sample_seed: 3"))
    a = run(recipe, tmp_path / "a", quiet=True)
    b = run(recipe, tmp_path / "b", quiet=True)
    rows = pq.read_table(str(tmp_path / "a" / "input")).column("row_no").to_pylist()
    assert a.digest == b.digest and a.counts["rows_in"] == 10 and rows == sorted(rows) and rows[-1] > 20
