"""Batched generation (greedy by default), seeded without global RNG side effects.

Each batch's prompts (all but their last token) go through the model once, as a prefill whose keys
and values every returned sequence starts from: `num_return_sequences` samples share it (HF's
generate would prefill each copy). With a `PrefixKV`, the prefill runs only what the cache does not
hold of each prompt (`cached.prompt_cache`: rows of similar length together, little padding): a prompt
scored by `score_continuations` before is not run again, a prompt that begins like a stored one runs
only its own end; its keys are stored in turn. The batch then decodes from the left-padded keys.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from agmask.scoring.cached import prompt_cache
from agmask.scoring.encode import tokens
from agmask.scoring.kvcache import PrefixKV


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prefixes: list[str], max_new_tokens: int | list[int] = 24,
             batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             num_return_sequences: int = 1,
             seed: int = 0, on_batch: Callable[[int], None] | None = None,
             kv: PrefixKV | None = None) -> list[list[str]]:
    """Return, for every prefix, `num_return_sequences` continuations (text after the prefix).

    max_new_tokens: one length for every prefix, or one per prefix (a batch decodes to its longest; each
    reply is cut at its own: greedy tokens do not depend on the tokens after them).
    kv: the prefix cache of this same model state (optional): what it holds of a prompt is not run again,
    and every prompt's keys are stored there.
    """
    lengths = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prefixes)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    results: list[list[str]] = []
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for lo in range(0, len(prefixes), batch_size):
            chunk = [tokens(tokenizer, p) for p in prefixes[lo : lo + batch_size]]
            cut = lengths[lo : lo + batch_size]
            ids, mask, cache = prompt_cache(model, [c[:-1] for c in chunk], kv, pad_id=pad)  # left-padded
            last = torch.tensor([[c[-1]] for c in chunk], device=device)  # (B, 1): generation runs it (its logits)
            ids, mask = torch.cat([ids, last], dim=1), torch.cat([mask, torch.ones_like(last)], dim=1)
            if num_return_sequences > 1:  # every sample starts from the one prefill
                ids = ids.repeat_interleave(num_return_sequences, dim=0)
                mask = mask.repeat_interleave(num_return_sequences, dim=0)
                if cache is not None:
                    cache.batch_repeat_interleave(num_return_sequences)
            kwargs = dict(do_sample=do_sample, max_new_tokens=max(cut), pad_token_id=pad, eos_token_id=eos)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if cache is not None:
                kwargs["past_key_values"] = cache
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            new = out[:, ids.shape[1]:]  # (B * num_return_sequences, max(cut))
            texts = tokenizer.batch_decode([row[: cut[k // num_return_sequences]] for k, row in enumerate(new)],
                                           skip_special_tokens=True)
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
