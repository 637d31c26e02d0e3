"""Tiny random models and tokenizers built in code, for fast tests and examples.

``tiny_model()`` returns a random ``LlamaForCausalLM`` and a byte-level BPE tokenizer trained on a
small in-memory corpus, with ChatML specials (``<|im_start|>``, ``<|im_end|>``) and a ChatML chat
template; like SmolLM2 the pad token equals the end-of-turn token. No files, about a second.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "how do i bake bread at home? mix flour, water, salt and yeast, then wait.",
    "i cannot help with that request, but here is some safety information.",
    "sure! here are the steps: first, second, third.",
    "user assistant system hello world thanks please explain why",
    "data curation filters samples by quality, risk and hardness scores",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000",
]


def tiny_tokenizer(vocab_size: int = 320, chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (256 bytes + specials + merges up to ``vocab_size``)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(
    n_layers: int = 2,
    hidden: int = 32,
    vocab_size: int = 320,
    seed: int = 0,
    chat_template: bool = True,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random Llama (``n_layers`` blocks, width ``hidden``, 4 heads / 2 KV heads) and its tokenizer."""
    tokenizer = tiny_tokenizer(vocab_size, chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def tiny_model_without_chat_template(**kwargs) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """``tiny_model`` whose tokenizer has no chat template (exercises the documented fallback)."""
    return tiny_model(chat_template=False, **kwargs)


def save_tiny_model(directory: str | Path, **kwargs) -> Path:
    """Write ``tiny_model(**kwargs)`` as a loadable HF directory (safetensors) and return its path."""
    directory = Path(directory)
    model, tokenizer = tiny_model(**kwargs)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
