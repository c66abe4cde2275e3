"""Batched generation with left padding (greedy by default), seeded without global RNG side effects.

Each batch's prompt (all but its last token) goes through the model once, as a prefill whose keys
and values every returned sequence starts from: `num_return_sequences` samples share it (HF's
generate would prefill each copy), and prompts already run by `score_continuations` with the same
`PrefixKV` reuse the scoring pass's keys and are not run again.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from agmask.scoring.encode import tokens
from agmask.scoring.kvcache import PrefixKV, batched_cache, empty_cache
from agmask.scoring.logprobs import decoder_and_head, position_ids_from_mask


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prefixes: list[str], max_new_tokens: int = 24, batch_size: int = 8,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
             seed: int = 0, on_batch: Callable[[int], None] | None = None,
             kv: PrefixKV | None = None) -> list[list[str]]:
    """Return, for every prefix, `num_return_sequences` continuations (text after the prefix).

    kv: prefix keys/values left by `score_continuations` on this same model state (optional).
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    results: list[list[str]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for lo in range(0, len(prefixes), batch_size):
            batch = prefixes[lo : lo + batch_size]
            chunk = [tokens(tokenizer, p) for p in batch]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, c in enumerate(chunk):  # left padding: every row ends where generation starts
                ids[i, width - len(c) :] = torch.tensor(c)
                mask[i, width - len(c) :] = 1
            ids, mask = ids.to(device), mask.to(device)
            cache = _prompt_cache(model, batch, chunk, ids, mask, kv)  # keys of ids[:, :-1]
            if num_return_sequences > 1:  # every sample starts from the one prefill
                ids = ids.repeat_interleave(num_return_sequences, dim=0)
                mask = mask.repeat_interleave(num_return_sequences, dim=0)
                if cache is not None:
                    cache.batch_repeat_interleave(num_return_sequences)
            kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if cache is not None:
                kwargs["past_key_values"] = cache
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            new = out[:, width:]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for i in range(len(chunk)):
                results.append(texts[i * num_return_sequences : (i + 1) * num_return_sequences])
            if on_batch:
                on_batch(len(chunk))
    return results


def _prompt_cache(model: nn.Module, prefixes: list[str], chunk: list[list[int]], ids: torch.Tensor,
                  mask: torch.Tensor, kv: PrefixKV | None):
    """Keys/values of every row's prompt but its last token, left-padded to ids[:, :-1]; None if width 1."""
    width = ids.shape[1]
    if width < 2:
        return None
    stored = [kv.get(p) if kv is not None else None for p in prefixes]
    if all(s is not None and s[0] == c[:-1] for s, c in zip(stored, chunk)):
        return batched_cache(model, [s[1] for s in stored], width - 1)
    body, _ = decoder_and_head(model)
    return body(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids_from_mask(mask)[:, :-1],
                past_key_values=empty_cache(model), use_cache=True).past_key_values


def _eos_ids(model: nn.Module, tokenizer) -> list[int]:
    ids = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in [gen_eos, tokenizer.eos_token_id]:
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(e)
    return sorted(ids)
