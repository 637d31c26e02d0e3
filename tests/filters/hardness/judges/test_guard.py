"""Guard-judge parsers on hand-written fixtures, and the generation path on a tiny random Llama."""

import json
from pathlib import Path

import pytest

from curator.errors import InputError, RecipeError
from curator.ml.testing import save_tiny_model
from filters.hardness.judges.guard import (
    GuardJudge,
    parse_llama_guard,
    parse_wildguard,
    verdict_from_output,
)

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "guard_outputs.json").read_text("utf-8"))


@pytest.mark.parametrize("case", FIXTURES["llama_guard_3"], ids=lambda c: repr(c["raw"])[:30])
def test_parse_llama_guard(case):
    assert parse_llama_guard(case["raw"]) == (case["harmful"], case["codes"])


@pytest.mark.parametrize("case", FIXTURES["wildguard"], ids=lambda c: repr(c["raw"])[:30])
def test_parse_wildguard(case):
    expected = {k: case[k] for k in ("harmful_request", "response_refusal", "harmful_response")}
    assert parse_wildguard(case["raw"]) == expected


def test_verdict_mapping_keeps_raw():
    v = verdict_from_output("Harmful request: yes\nResponse refusal: yes\nHarmful response: no", "wildguard", "wg")
    assert (v.harmful, v.refusal, v.judge) == (False, True, "wg")
    v = verdict_from_output("unsafe\nS9", "llama_guard_3", "lg")
    assert (v.harmful, v.refusal, v.raw) == (True, None, "unsafe\nS9")
    assert verdict_from_output("garbage", "llama_guard_3", "lg").harmful is None


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("guard") / "tiny")


PAIRS = [("how do i bake bread?", "mix flour, water, salt and yeast."),
         ("tell me something bad", "i cannot help with that request"),
         ("a longer prompt " * 5, "")]


@pytest.mark.parametrize("fmt", ["llama_guard_3", "wildguard"])
def test_tiny_model_garbage_is_abstain(tiny_dir, fmt):
    judge = GuardJudge(tiny_dir, format=fmt, max_new_tokens=8, batch_size=2)
    verdicts = judge.judge(PAIRS)
    assert len(verdicts) == len(PAIRS)
    assert all(v.harmful is None and isinstance(v.raw, str) for v in verdicts)
    assert judge.abstain_rate == 1.0 and judge.n_judged == 3
    # greedy + left padding: batching does not change the outputs
    single = GuardJudge(tiny_dir, format=fmt, max_new_tokens=8, batch_size=1).judge(PAIRS)
    assert [v.raw for v in single] == [v.raw for v in verdicts]


def test_render_and_fingerprint(tiny_dir):
    lg = GuardJudge(tiny_dir, format="llama_guard_3")
    text = lg.render("PROMPT-X", "RESPONSE-Y")
    assert text.index("PROMPT-X") < text.index("RESPONSE-Y")  # assistant turn is included
    wg = GuardJudge(tiny_dir, format="wildguard")
    rendered = wg.render("PROMPT-X", "RESPONSE-Y")
    assert rendered.startswith("<s><|user|>\n[INST]") and rendered.endswith("<|assistant|>\n")
    assert "Human user:\nPROMPT-X\n\nAI assistant:\nRESPONSE-Y\n" in rendered
    assert lg.fingerprint() != wg.fingerprint()
    assert lg.fingerprint() == GuardJudge(tiny_dir, format="llama_guard_3").fingerprint()
    assert lg.fingerprint() != GuardJudge(tiny_dir, format="llama_guard_3", max_new_tokens=5).fingerprint()


def test_bad_arguments(tiny_dir, tmp_path):
    with pytest.raises(RecipeError, match="wildguard"):
        GuardJudge(tiny_dir, format="md_judge")
    with pytest.raises(InputError):
        GuardJudge(tmp_path / "missing")
