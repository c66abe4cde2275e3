"""Score many continuations of one prefix with a shared KV cache (evaluation; no gradients).

For one prompt, the prefix (chat template + lead) runs once; all continuations (the aliases and the
multiple-choice candidates) then run as one batch on a copy of its cache. That is ~8x fewer tokens
than scoring each (prefix + candidate) sequence separately.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from agmask.scoring.encode import common_prefix_len, tokens


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # summed log-prob of the continuation's tokens (the answer span)
    first_rank: int  # 1-based rank of the first answer token in the next-token distribution
    num_tokens: int


@torch.no_grad()
def score_continuations(model: nn.Module, tokenizer, prefix: str, continuations: list[str],
                        prefix_ids: list[int] | None = None) -> list[ContinuationScore]:
    if not continuations:
        return []
    prefix_ids = tokens(tokenizer, prefix) if prefix_ids is None else prefix_ids
    joints = [tokens(tokenizer, prefix + c) for c in continuations]
    starts = [common_prefix_len(prefix_ids, j) for j in joints]  # each continuation's answer span start
    for c, j, s in zip(continuations, joints, starts):
        if s >= len(j):
            raise ValueError(f"continuation {c!r} adds no tokens after the prefix")
    shared = min(starts)  # cached part: identical for every continuation
    device = next(model.parameters()).device

    # 1) the shared prefix once; keep only the last position's logits.
    head_ids = torch.tensor([joints[0][:shared]], device=device)
    out = model(input_ids=head_ids, use_cache=True, logits_to_keep=1)
    last_logits = out.logits[0, -1].float()  # (V,) predicts token `shared`
    cache = out.past_key_values

    # 2) all tails at once on a repeated cache, right-padded.
    tails = [j[shared:] for j in joints]
    n, width = len(tails), max(len(t) for t in tails)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tail_ids = torch.full((n, width), pad, dtype=torch.long, device=device)
    tail_mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for i, t in enumerate(tails):
        tail_ids[i, : len(t)] = torch.tensor(t, device=device)
        tail_mask[i, : len(t)] = 1
    if width > 1 or n > 1:
        cache.batch_repeat_interleave(n)
        attn = torch.cat([torch.ones((n, shared), dtype=torch.long, device=device), tail_mask], dim=1)
        positions = (shared + torch.arange(width, device=device)).unsqueeze(0).expand(n, -1)
        tail_logits = model(input_ids=tail_ids, attention_mask=attn, past_key_values=cache,
                            position_ids=positions, use_cache=True).logits.float()  # (n, width, V)
    else:
        tail_logits = None

    results = []
    for i, (joint, start) in enumerate(zip(joints, starts)):
        # logits predicting joint[k] live at: last_logits for k == shared, tail_logits[i, k - shared - 1] after.
        def logits_for(k: int) -> torch.Tensor:
            return last_logits if k == shared else tail_logits[i, k - shared - 1]

        total = 0.0
        for k in range(start, len(joint)):
            total += float(logits_for(k).log_softmax(-1)[joint[k]])
        first = logits_for(start)
        rank = int((first > first[joint[start]]).sum()) + 1
        results.append(ContinuationScore(total, rank, len(joint) - start))
    return results
