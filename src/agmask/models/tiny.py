"""Tiny random Llama / Qwen2 models, built in memory from a config: the real code path in seconds.

hidden (48) != intermediate (80) != typical LoRA rank (8), so a transposed mask cannot pass a test.
The tokenizer is a byte-level BPE with a few merges (so a prompt/answer boundary can merge, as in
real tokenizers) and a ChatML chat template.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from agmask.errors import ModelError

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Merges of byte-level symbols ("Ġ" is a space). "c e" lets "Inc" + "eption" merge at the boundary.
MERGES = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("e", "r"), ("o", "n"), ("c", "e"), ("Ġ", "a"), ("Ġt", "he"), ("a", "t")]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_SHAPES = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    byte_map = pre_tokenizers.ByteLevel.alphabet()
    vocab = {sym: i for i, sym in enumerate(sorted(byte_map))}
    for a, b in MERGES:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


TINY_ARCHS = ("llama", "qwen2")


def tiny_model(arch: str, seed: int = 0):
    """Return (model, tokenizer) for `tiny:llama` or `tiny:qwen2`, deterministic under `seed`."""
    tokenizer = tiny_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        # A wider init than HF's 0.02 gives peaked, input-dependent logits, so tests mean something.
        initializer_range=0.15,
        **TINY_SHAPES,
    )
    if arch == "llama":
        config, cls = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "qwen2":
        config, cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        raise ModelError(f"unknown tiny model 'tiny:{arch}' (choose tiny:llama or tiny:qwen2)")
    # Seeded init without touching the global RNG state of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.eval()
    return model, tokenizer
