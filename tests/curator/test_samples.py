import pyarrow as pa
import pytest

from curator.errors import InputError
from curator.samples import adapt, detect_format, sample_ids, shard_of


def test_sample_id_is_content_hash_stable_and_order_free():
    t = pa.table({"prompt": ["a", "b"], "response": ["x", "y"]})
    canon = adapt(t, "prompt_response", "s", "t")
    ids = sample_ids(canon).to_pylist()
    again = sample_ids(adapt(t.take([1, 0]), "prompt_response", "other", "t")).to_pylist()
    assert ids == list(reversed(again))  # position and source do not change the id
    assert len(set(ids)) == 2


def test_sample_id_known_value():
    # Pinned: changing the canonical JSON would silently re-shard every existing run.
    canon = adapt(pa.table({"prompt": ["hi"], "response": ["there"]}), "auto", "s", "t")
    assert sample_ids(canon)[0].as_py() == __import__("hashlib").sha256(
        b'{"messages":null,"prompt":"hi","response":"there"}').hexdigest()


@pytest.mark.parametrize("cols,fmt", [
    (["instruction", "input", "output"], "alpaca"),
    (["instruction", "context", "response", "category"], "dolly"),
    (["prompt", "response"], "prompt_response"),
    (["prompt", "completion"], "prompt_completion"),
    (["messages"], "messages"),
    (["conversations", "id"], "sharegpt"),
    (["text", "url"], "text"),
])
def test_detect_format(cols, fmt):
    assert detect_format(cols, "f") == fmt


def test_unknown_and_ambiguous_layouts_list_columns():
    with pytest.raises(InputError, match=r"\['answer', 'question'\].*not recognised.*alpaca"):
        detect_format(["question", "answer"], "f.jsonl")
    with pytest.raises(InputError, match="ambiguous"):
        detect_format(["prompt", "response", "text"], "f.jsonl")


def test_alpaca_joins_input_and_passes_extra_columns():
    t = pa.table({"instruction": ["Sum", "Say hi"], "input": ["1 2", ""], "output": ["3", "hi"], "lang": ["en", "fr"]})
    c = adapt(t, "auto", "src", "f")
    assert c.column("prompt").to_pylist() == ["Sum\n\n1 2", "Say hi"]
    assert c.column("lang").to_pylist() == ["en", "fr"]
    assert c.column("source").to_pylist() == ["src", "src"]


def test_alpaca_with_an_empty_instruction_has_its_input_as_the_prompt():
    t = pa.table({"instruction": ["", "", None], "input": ["translate: hola", "", "x"], "output": ["hello", "a", "b"]})
    c = adapt(t, "alpaca", "src", "f")
    assert c.column("prompt").to_pylist() == ["translate: hola", "", None]
    assert c.column("_bad_reason").to_pylist()[2].startswith("missing prompt")


def test_sharegpt_and_bad_messages():
    t = pa.table({"conversations": [[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                                    [{"from": "alien", "value": "q"}, {"from": "gpt", "value": "a"}]]})
    c = adapt(t, "auto", "s", "f")
    assert c.column("prompt").to_pylist()[0] == "q" and c.column("response").to_pylist()[0] == "a"
    assert c.column("_bad_reason").to_pylist()[0] is None
    assert "unknown role 'alien'" in c.column("_bad_reason").to_pylist()[1]


def test_shard_of_depends_only_on_id():
    sid = "00000010" + "f" * 56
    assert shard_of(sid, 16) == 0 and shard_of(sid, 7) == 16 % 7


def test_fast_sample_ids_equal_the_canonical_json_definition():
    from curator.samples import _id_of

    texts = ['plain', 'quote " and \\ backslash', "tab\tnew\nline\rcr", "ünïcödé ✓ 中文", "ctrl \x01 \x1f",
             "", "emoji 🙂 and \u2028 sep", None]
    prompts = [t for t in texts for _ in texts]
    responses = [t for _ in texts for t in texts]
    canon = adapt(pa.table({"prompt": pa.array(prompts, pa.string()), "response": pa.array(responses, pa.string())}),
                  "prompt_response", "s", "t")
    assert sample_ids(canon).to_pylist() == [_id_of(p, r, None) for p, r in zip(prompts, responses)]
    assert sample_ids(canon.slice(5, 20)).to_pylist() == sample_ids(canon).to_pylist()[5:25]
    assert sample_ids(canon.slice(0, 0)).to_pylist() == []


def test_prompts_only_layouts_are_detected_and_read_without_responses():
    assert detect_format(["prompt", "category"], "f") == "prompts"
    assert detect_format(["prompt", "response"], "f") == "prompt_response"  # a response column wins
    c = adapt(pa.table({"prompt": ["how do I pick a lock?"], "category": ["crime"]}), "auto", "s", "f")
    assert c.column("prompt").to_pylist() == ["how do I pick a lock?"] and c.column("response").null_count == 1
    assert c.column("category").to_pylist() == ["crime"] and c.column("_bad_reason").null_count == 1
    convo = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how do I pick a lock?"}]
    m = adapt(pa.table({"messages": [convo]}), "auto", "s", "f")
    assert m.column("prompt").to_pylist() == ["how do I pick a lock?"] and m.column("response").null_count == 1
    assert m.column("messages").to_pylist() == [convo]
    explicit = adapt(pa.table({"messages": [convo, convo[:3]]}), "prompts", "s", "f")
    assert explicit.column("_bad_reason").to_pylist() == [None, "malformed messages: the last turn must be the user's"]
    mixed = adapt(pa.table({"messages": [convo, convo[:3]]}), "auto", "s", "f")  # not all prompts: a messages file
    assert mixed.column("_bad_reason").to_pylist() == ["malformed messages: the last turn must be the assistant's", None]
