"""The candidate distribution as a preference: what the model would pick if the concept were not there.

Inputs are candidate log-probs after a set's lead (`scoring.candidate_logprobs`), shape (..., C) over
`concept.candidates`; `drop` are the concept's columns (`ConceptSpec.concept_candidates()`). Removing the
concept and renormalising gives the distribution over the remaining titles: an adapter that only stops
recommending the concept leaves it unchanged (KL 0, same top title). Torch throughout, so a training term
(issue 17, item 4: keep the renormalised distribution over the other candidates) can use the same functions
with gradients.
"""
from __future__ import annotations

import torch


def remaining_log_distribution(logprobs: torch.Tensor, drop: list[int]) -> torch.Tensor:
    """(..., C) candidate log-probs -> (..., C - len(drop)) log-distribution over the kept candidates."""
    keep = [i for i in range(logprobs.shape[-1]) if i not in set(drop)]
    if not keep:
        raise ValueError("every candidate is dropped: no remaining distribution")
    return logprobs[..., keep].log_softmax(-1)


def kl_remaining(base: torch.Tensor, adapted: torch.Tensor, drop: list[int]) -> torch.Tensor:
    """(...,) KL(base || adapted) in nats between the renormalised distributions over the kept candidates."""
    p = remaining_log_distribution(base, drop)
    q = remaining_log_distribution(adapted, drop)
    return (p.exp() * (p - q)).sum(-1)


def remaining_titles(candidates: list[str], drop: list[int]) -> list[str]:
    """The kept candidates' titles, in the column order of `remaining_log_distribution`."""
    return [c for i, c in enumerate(candidates) if i not in set(drop)]


def top_titles(logprobs: torch.Tensor, titles: list[str], k: int) -> list[tuple[str, float]]:
    """The k most likely titles of one (C,) row of log-probs, with their softmax probabilities (ties: list order)."""
    probs = logprobs.softmax(-1)
    order = sorted(range(len(titles)), key=lambda i: (-probs[i].item(), i))[:k]
    return [(titles[i], probs[i].item()) for i in order]
