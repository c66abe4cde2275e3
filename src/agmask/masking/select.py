"""Neuron selection from a (layers, intermediate) score: global top-k, per-layer budget, or threshold.

Layers come from the attribution's layer ranking or are given explicitly; neurons are ranked by score
within them (never by index). The ablation masks have the same size: random units in the same
layers (same count per layer), the same counts in randomly drawn layers, and every unit of the selected
layers.
"""
from __future__ import annotations

import torch

from agmask.errors import StageError

METHODS = ("topk", "per_layer", "threshold")


def choose_layers(ranking: list[int], count: int, explicit: list[int] | None, num_layers: int,
                  min_layer: int = 0) -> list[int]:
    """Explicit layers if given, else the first `count` of `ranking` at or above `min_layer` (count 0: every layer
    from `min_layer` on); sorted. `min_layer` does not apply to explicit layers."""
    if explicit:
        layers = list(explicit)
    else:
        if min_layer >= num_layers:
            raise StageError(f"mask.min_depth leaves no layer (the first allowed would be {min_layer}, the model has "
                             f"layers 0..{num_layers - 1}): lower mask.min_depth")
        allowed = [l for l in ranking if l >= min_layer]
        layers = allowed[:count] if count else list(range(min_layer, num_layers))
    bad = [l for l in layers if not 0 <= l < num_layers]
    if bad:
        raise StageError(f"unknown layer(s) {bad}: the model has layers 0..{num_layers - 1}")
    if not layers:
        raise StageError("no layers selected: set mask.layers or mask.num_layers")
    return sorted(set(layers))


def mask_from_scores(scores: torch.Tensor, layers: list[int], method: str = "topk", k: int = 256,
                     threshold: float | None = None) -> torch.Tensor:
    """Boolean (L, I) mask inside `layers`. Raises StageError if it selects nothing."""
    if method not in METHODS:
        raise StageError(f"unknown mask method {method!r} (choose {', '.join(METHODS)})")
    allowed = torch.zeros(scores.shape[0], dtype=torch.bool)
    allowed[layers] = True
    masked = scores.float().masked_fill(~allowed[:, None], float("-inf"))  # (L, I)
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    if method == "topk":
        idx = torch.topk(masked.flatten(), min(k, int(allowed.sum()) * scores.shape[1])).indices
        mask.view(-1)[idx] = True
    elif method == "per_layer":
        per = max(k // len(layers), 1)
        for layer in layers:
            mask[layer, torch.topk(scores[layer].float(), min(per, scores.shape[1])).indices] = True
    else:
        if threshold is None:
            raise StageError("mask.method=threshold needs mask.threshold")
        mask = masked > threshold
    if not mask.any():
        raise StageError(f"the mask selects no neuron (method {method}, k {k}, threshold {threshold}, layers {layers}); "
                         "raise mask.k, lower mask.threshold or choose other layers")
    return mask


def layers_of(mask: torch.Tensor) -> list[int]:
    """The layers a (L, I) mask touches, in order: the layers an adapter for it wraps."""
    return torch.nonzero(mask.any(1)).flatten().tolist()


def random_mask_like(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Same number of units per layer as `mask`, drawn uniformly within each layer."""
    out = torch.zeros_like(mask)
    for layer in torch.nonzero(mask.any(1)).flatten().tolist():
        count = int(mask[layer].sum())
        out[layer, torch.randperm(mask.shape[1], generator=generator)[:count]] = True
    return out


def random_layers_mask(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`mask`'s per-layer unit counts moved to randomly drawn layers, units drawn uniformly within each.

    The layers are drawn among those `mask` does not touch when the model has enough of them (a control
    for the layer choice itself), else among all layers. The i-th drawn layer gets the i-th count of
    `mask`'s layers in layer order, so the multiset of per-layer counts is `mask`'s."""
    own = torch.nonzero(mask.any(1)).flatten().tolist()
    counts = [int(mask[layer].sum()) for layer in own]
    others = [layer for layer in range(mask.shape[0]) if layer not in own]
    pool = others if len(others) >= len(counts) else list(range(mask.shape[0]))
    drawn = [pool[i] for i in torch.randperm(len(pool), generator=generator)[: len(counts)].tolist()]
    out = torch.zeros_like(mask)
    for layer, count in zip(drawn, counts):
        out[layer, torch.randperm(mask.shape[1], generator=generator)[:count]] = True
    return out


def full_layer_mask(mask: torch.Tensor) -> torch.Tensor:
    """Every unit of the layers that `mask` touches."""
    return mask.any(1, keepdim=True).expand_as(mask).clone()
