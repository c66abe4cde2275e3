"""Causal checks of an attribution: zero (or mean-ablate) the top neurons and see what the model forgets.

The top-k neurons must lower the concept's answer log-prob on held-out prompts far more than k
random neurons drawn from the same layers (same count per layer), and move neighbours much less.
Split-half stability: the top-k from two halves of forget_train should overlap far above chance.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from agmask.models.arch import mlp_module


@contextmanager
def zero_neurons(model: nn.Module, neurons: list[tuple[int, int]]) -> Iterator[None]:
    """Zero the given (layer, unit) MLP activations (input of down_proj) inside the block."""
    with _replaced(model, neurons, None):
        yield


@contextmanager
def mean_neurons(model: nn.Module, neurons: list[tuple[int, int]], means: torch.Tensor) -> Iterator[None]:
    """Replace the given (layer, unit) MLP activations by `means[layer, unit]` ((L, I), e.g. their mean
    over retain_train: `attribution.effects.activation_means`) at every position, inside the block."""
    with _replaced(model, neurons, means):
        yield


@contextmanager
def _replaced(model: nn.Module, neurons: list[tuple[int, int]], means: torch.Tensor | None) -> Iterator[None]:
    by_layer: dict[int, list[int]] = {}
    for layer, unit in neurons:
        by_layer.setdefault(layer, []).append(unit)
    handles = []
    try:
        for layer, units in by_layer.items():
            idx = torch.tensor(sorted(set(units)))
            value = 0 if means is None else means[layer, idx]  # (units,)

            def hook(module, args, _idx=idx, _value=value):
                act = args[0].clone()  # (B, T, I)
                fill = _value if isinstance(_value, int) else _value.to(act.device, act.dtype)
                act[..., _idx.to(act.device)] = fill
                return (act, *args[1:])

            handles.append(mlp_module(model, layer, "down").register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def random_like(neurons: list[tuple[int, int]], intermediate: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """As many random units per layer as `neurons` has, excluding `neurons` themselves."""
    taken = set(neurons)
    out = []
    for layer, count in Counter(l for l, _ in neurons).items():
        pool = torch.tensor([u for u in range(intermediate) if (layer, u) not in taken])
        pick = pool[torch.randperm(len(pool), generator=generator)[:count]]
        out.extend((layer, int(u)) for u in pick)
    return out


def jaccard(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / max(len(sa | sb), 1)
