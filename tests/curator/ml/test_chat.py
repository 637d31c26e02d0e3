import pytest
import torch
import torch.nn.functional as F
from tokenizers import AddedToken

from curator.errors import InputError
from curator.ml.chat import (
    IGNORE,
    collate,
    encode_sample,
    end_of_turn_id,
    model_per_sample_loss,
    per_sample_loss,
    render_generation_prompt,
)
from curator.ml.testing import tiny_model_without_chat_template, tiny_tokenizer


@pytest.fixture
def tok():
    return tiny_tokenizer()


def _rendered_ids(tok, messages):
    return tok.encode(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)


def test_end_of_turn_is_derived_from_template(tok):
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>")
    # a Llama-3-like template ends turns with <|eot_id|>, which is neither eos nor hard-coded anywhere
    tok.add_special_tokens({"additional_special_tokens": [AddedToken("<|eot_id|>", special=True)]})
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|eot_id|>") != tok.eos_token_id
    s = encode_sample(tok, "hi", "yo")
    assert s.input_ids[-1] == tok.convert_tokens_to_ids("<|eot_id|>")


@pytest.mark.parametrize(
    "prompt,response",
    [("hello world, how are you?", "fine, thanks!"), ("bake bread?", " mix flour\nand water.")],
)
def test_tokens_match_rendered_template(tok, prompt, response):
    s = encode_sample(tok, prompt, response)
    full = _rendered_ids(
        tok, [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    )
    assert full[: len(s.input_ids)] == s.input_ids
    assert tok.decode(full[len(s.input_ids) :]).strip() == ""  # only the template's trailing newline remains
    assert s.labels[: s.prompt_len] == [IGNORE] * s.prompt_len
    assert s.labels[s.prompt_len :] == s.input_ids[s.prompt_len :]
    assert s.input_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(s.input_ids[s.prompt_len : -1]) == response
    assert s.input_ids[: s.prompt_len] == render_generation_prompt(tok, prompt)
    assert not s.truncated and s.prompt_len + s.response_len == len(s.input_ids)


def test_messages_final_assistant_is_response(tok):
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "why?"},
        {"role": "assistant", "content": "because"},
    ]
    s = encode_sample(tok, "ignored", None, messages=msgs)
    assert s.input_ids[: s.prompt_len] == render_generation_prompt(tok, msgs[:-1])
    assert tok.decode(s.input_ids[s.prompt_len :]) == "because<|im_end|>"
    assert _rendered_ids(tok, msgs)[: len(s.input_ids)] == s.input_ids
    open_ended = encode_sample(tok, None, None, messages=msgs[:-1])
    assert open_ended.response_len == 0 and set(open_ended.labels) == {IGNORE}


def test_text_only_sample_has_loss_on_every_token(tok):
    s = encode_sample(tok, None, "the quick brown fox")
    assert s.input_ids[0] == tok.bos_token_id and s.prompt_len == 0
    assert s.labels == s.input_ids
    assert tok.decode(s.input_ids[1:]) == "the quick brown fox"


def test_truncation_keeps_the_prompt_and_the_start_of_the_response(tok):
    answer = "first second third fourth fifth sixth seventh eighth ninth tenth"
    full = encode_sample(tok, "short question?", answer)
    cut = encode_sample(tok, "short question?", answer, max_length=full.prompt_len + 30)
    assert cut.truncated and cut.prompt_len == full.prompt_len and cut.response_len == 30 < full.response_len
    assert cut.input_ids == full.input_ids[: full.prompt_len + 30]  # the response's opening, not its end
    long_prompt = encode_sample(tok, "words " * 40, answer)
    both = encode_sample(tok, "words " * 40, answer, max_length=20)
    assert len(both.input_ids) == 20 and both.response_len == 10  # half the budget for the response
    assert both.input_ids[:10] == long_prompt.input_ids[long_prompt.prompt_len - 10: long_prompt.prompt_len]
    assert both.input_ids[10:] == long_prompt.input_ids[long_prompt.prompt_len: long_prompt.prompt_len + 10]
    doc = encode_sample(tok, None, answer, max_length=5)
    assert doc.input_ids == encode_sample(tok, None, answer).input_ids[:5] and doc.response_len == 5
    probe = encode_sample(tok, "words " * 40, None, max_length=8)
    assert probe.input_ids == long_prompt.input_ids[long_prompt.prompt_len - 8: long_prompt.prompt_len]


def test_truncation_sides(tok):
    full = encode_sample(tok, "hello world " * 5, "fine thanks")
    left = encode_sample(tok, "hello world " * 5, "fine thanks", max_length=10, truncation_side="left")
    right = encode_sample(tok, "hello world " * 5, "fine thanks", max_length=10, truncation_side="right")
    assert left.truncated and right.truncated and len(left.input_ids) == len(right.input_ids) == 10
    assert left.input_ids == full.input_ids[-10:] and left.response_len == full.response_len
    assert right.input_ids == full.input_ids[:10] and right.response_len == 0


def test_without_chat_template_prompts_fail_clearly_documents_work():
    _, tok = tiny_model_without_chat_template()
    with pytest.raises(InputError, match="no chat template"):
        encode_sample(tok, "hi", "yo")
    with pytest.raises(InputError, match="no chat template"):
        render_generation_prompt(tok, "hi")
    assert encode_sample(tok, None, "a document").response_len > 0


def test_collate_padding_keeps_end_of_turn_label_when_pad_equals_eos(tok):
    a, b = encode_sample(tok, "hi", "yo"), encode_sample(tok, "hello world", "fine thanks a lot")
    assert tok.pad_token_id == end_of_turn_id(tok)
    right = collate([a, b], tok.pad_token_id)
    n = len(a.input_ids)
    assert right["input_ids"][0, :n].tolist() == a.input_ids and right["attention_mask"][0].sum() == n
    assert right["labels"][0, n - 1] == tok.pad_token_id and (right["labels"][0, n:] == IGNORE).all()
    left = collate([a, b], tok.pad_token_id, padding_side="left")
    assert left["input_ids"][0, -n:].tolist() == a.input_ids and left["attention_mask"][0, :-n].sum() == 0


def test_per_sample_loss_is_each_samples_own_token_mean(tiny):
    model, tok = tiny
    samples = [
        encode_sample(tok, "hi", "yo"),
        encode_sample(tok, "hello", "a much longer answer, really long"),
        encode_sample(tok, None, "just text"),
    ]
    batch = collate(samples, tok.pad_token_id)
    with torch.no_grad():
        losses = per_sample_loss(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["labels"],
        )
        for i, s in enumerate(samples):
            logits = model(input_ids=torch.tensor([s.input_ids])).logits[0, :-1]
            target = torch.tensor(s.labels[1:])
            keep = target != IGNORE
            assert losses[i] == pytest.approx(F.cross_entropy(logits[keep], target[keep]).item(), rel=1e-5)
        hf_mean = model(**batch).loss
        assert not torch.isclose(hf_mean, losses.mean())  # HF's batch token-mean is a different quantity
        fast = model_per_sample_loss(model, batch, response_only_logits=True)
        full = model_per_sample_loss(model, batch, response_only_logits=False)
    torch.testing.assert_close(fast, losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full, losses, rtol=1e-5, atol=1e-6)
