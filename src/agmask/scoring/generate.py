"""Batched generation with left padding (greedy by default), seeded without global RNG side effects."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from agmask.scoring.encode import tokens


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prefixes: list[str], max_new_tokens: int = 24, batch_size: int = 8,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
             seed: int = 0, on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
    """Return, for every prefix, `num_return_sequences` continuations (text after the prefix)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    results: list[list[str]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for lo in range(0, len(prefixes), batch_size):
            chunk = [tokens(tokenizer, p) for p in prefixes[lo : lo + batch_size]]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, c in enumerate(chunk):  # left padding: every row ends where generation starts
                ids[i, width - len(c) :] = torch.tensor(c)
                mask[i, width - len(c) :] = 1
            kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                          num_return_sequences=num_return_sequences)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            new = out[:, width:]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for i in range(len(chunk)):
                results.append(texts[i * num_return_sequences : (i + 1) * num_return_sequences])
            if on_batch:
                on_batch(len(chunk))
    return results


def _eos_ids(model: nn.Module, tokenizer) -> list[int]:
    ids = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in [gen_eos, tokenizer.eos_token_id]:
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(e)
    return sorted(ids)
