"""Helpers for the evaluation tests: a tiny model forced to give one answer, and handmade adapters."""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from agmask.models.arch import decoder_layers, mlp_module_names
from agmask.scoring.encode import tokens


@torch.no_grad()
def force_answer(model, tokenizer, answer: str, starts: tuple[str, ...] = ('"', "\n"), logit: float = 4.0):
    """Turn a tiny model into a bigram machine whose greedy reply after any of `starts` is `answer`.

    Attention and MLP outputs are zeroed (o_proj, down_proj), so the residual stream at a position is
    just that token's embedding. The chain's tokens get one-hot embeddings and lm_head rows map each
    chain token to the next one: start -> a0 -> a1 -> ... -> a_last -> (closing quote) with logit
    `logit * sqrt(hidden)` and 0 for every other token, so the answer is near-certain.
    """
    chain = [tokens(tokenizer, s)[-1] for s in starts]
    answer_ids = tokens(tokenizer, answer)
    assert len(set(answer_ids)) == len(answer_ids) and not set(answer_ids) & set(chain), "chain tokens must be distinct"
    for layer in decoder_layers(model):
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    head.zero_()
    nexts = {s: answer_ids[0] for s in chain} | dict(zip(answer_ids, answer_ids[1:] + [chain[0]]))
    for slot, (tok, nxt) in enumerate(nexts.items()):
        embed[tok] = 0.0
        embed[tok, slot] = 1.0  # one-hot: after RMSNorm, sqrt(hidden) in this slot
        head[nxt, slot] = logit
    return model


def add_adapter(model, layers: list[int], std: float = 0.0, seed: int = 0):
    """A standard PEFT LoRA (r=4) on gate/up/down of `layers`; lora_B ~ N(0, std) (0 = changes nothing)."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=mlp_module_names(model, layers), init_lora_weights=True)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name and std:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    peft_model.eval()
    return peft_model
