"""Per-sample neuron scores, one function each: (activation, gradient, mask) -> (B, I).

a, g: (B, T, I) activation and d(L_n)/d(activation) of one layer; m: (B, T) 1 on the positions summed
over (the answer-predicting ones, every real token, or the subject's; `attribution.positions`).
Every score is then averaged over samples.
"""
from __future__ import annotations

from typing import Callable

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
SCORES: dict[str, ScoreFn] = {}


def register(name: str):
    def deco(fn: ScoreFn) -> ScoreFn:
        SCORES[name] = fn
        return fn
    return deco


@register("saliency")
def saliency(a: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """|sum_t a_tj g_tj|: first-order estimate of the loss change when neuron j is zeroed."""
    return (a * g * m[..., None]).sum(1).abs()  # (B, I)


@register("fisher")
def fisher(a: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """sum_t g_tj^2: empirical Fisher information of the neuron's activation."""
    return (g.square() * m[..., None]).sum(1)  # (B, I)
