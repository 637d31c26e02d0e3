"""Rollouts (explicit parameters, k growth through the store, rollout seeds) and the vLLM backend's errors.
The decode loop itself is tested in ``tests/curator/ml/test_generate.py``."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.errors import RecipeError
from curator.keyed_store import KeyedStore
from filters.hardness.rollouts import ROLLOUT_SCHEMA, GenParams, RolloutGenerator, check_backend, rollout_seed
from filters.hardness.vllm_sampler import VLLMSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


PROMPTS = ["hello there", "how do i bake bread at home? mix flour", "the quick brown fox jumps over the lazy dog"]


def test_bad_gen_params_are_recipe_errors():
    with pytest.raises(RecipeError, match="top_p"):
        GenParams(top_p=0)
    with pytest.raises(RecipeError, match="backend"):
        GenParams(backend="tgi")


def test_generator_reuses_rollouts_when_k_grows(tiny_model_dir, tmp_path):
    gen = GenParams(max_new_tokens=8, block=2)
    a = RolloutGenerator(tmp_path / "run" / "cache" / "rollouts", str(tiny_model_dir))
    first = a.rollouts(PROMPTS[:2], 2, gen)
    assert a.sampler().n_rows == 4
    again = a.rollouts(PROMPTS[:2], 2, gen)
    assert again == first and a.sampler().n_rows == 4  # same config: no generation
    b = RolloutGenerator(tmp_path / "run" / "cache" / "rollouts", str(tiny_model_dir))  # a fresh process reads the store
    grown = b.rollouts(PROMPTS[:2], 6, gen)
    assert b.sampler().n_rows == 8  # only j = 2..5 of each prompt
    assert [rs[:2] for rs in grown] == first
    assert [r["j"] for r in grown[0]] == list(range(6))
    # a brand-new run dir with k=6 at once gives the same rollouts as growing 2 -> 6
    c = RolloutGenerator(tmp_path / "other" / "cache" / "rollouts", str(tiny_model_dir))
    assert [[r["text"] for r in rs] for rs in c.rollouts(PROMPTS[:2], 6, gen)] == \
           [[r["text"] for r in rs] for rs in grown]
    table = pq.read_table(tmp_path / "run" / "cache" / "rollouts")
    assert table.num_rows == 12 and set(ROLLOUT_SCHEMA.names) <= set(table.column_names)
    row = table.to_pylist()[0]
    assert json.loads(row["gen_params"])["max_new_tokens"] == 8 and row["finish_reason"] in ("stop", "length")
    # another seed is another rollout identity
    other = a.rollouts(PROMPTS[:1], 2, GenParams(max_new_tokens=8, block=2, seed=1))
    assert other[0][0]["group_id"] != first[0][0]["group_id"]


def test_keyed_store_add_get(tmp_path):
    store = KeyedStore(tmp_path, "k", pa.schema([("k", "string"), ("v", "int64")]))
    store.add([{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    store.add([{"k": "c", "v": 3}])
    assert len(list(tmp_path.glob("part-*.parquet"))) == 2
    fresh = KeyedStore(tmp_path, "k", store.schema)
    assert fresh.get(["a", "c", "zz"]) == {"a": {"k": "a", "v": 1}, "c": {"k": "c", "v": 3}}


def test_vllm_missing_is_a_clear_error(tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RecipeError, match="vllm"):
            VLLMSampler(tiny_model_dir, None)
        with pytest.raises(RecipeError, match="pip install vllm"):
            check_backend("vllm")
    check_backend("transformers")


def test_rollout_seed_is_the_first_8_bytes_of_sha256_halved():
    digest = hashlib.sha256(b"3\x00group\x005").digest()
    assert rollout_seed(3, "group", 5) == int.from_bytes(digest[:8], "big") >> 1 < 2**63
