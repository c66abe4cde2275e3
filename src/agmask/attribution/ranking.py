"""From raw scores to a ranking: rank normalisation, contrastive and combined scores, top-k.

Scores of different kinds (saliency, Fisher) and different prompt sets live on different scales;
rank normalisation maps each to [0, 1] over all neurons, so they can be subtracted and averaged.
Selection is always by score, never by index (the reference code's mistake).
"""
from __future__ import annotations

import torch


def rank_normalise(scores: torch.Tensor) -> torch.Tensor:
    """Average ranks over all entries, scaled to [0, 1]; same shape as the input."""
    flat = scores.flatten().double()
    order = torch.argsort(flat, stable=True)
    sorted_vals = flat[order]
    ranks = torch.empty_like(flat)
    ranks[order] = torch.arange(len(flat), dtype=torch.double)
    # ties share their average rank
    _, inverse, counts = torch.unique_consecutive(sorted_vals, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    avg = (starts + (counts - 1) / 2.0).double()
    ranks[order] = avg[inverse]
    return (ranks / max(len(flat) - 1, 1)).reshape(scores.shape).float()


def contrastive(forget: torch.Tensor, retain: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """rank(forget) - lam * rank(retain): high for neurons that matter to the concept but not elsewhere."""
    return rank_normalise(forget) - lam * rank_normalise(retain)


def combined_score(forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor], lam: float = 1.0) -> torch.Tensor:
    """Mean of the contrastive saliency and contrastive Fisher scores, (L, I)."""
    return 0.5 * (contrastive(forget["saliency"], retain["saliency"], lam)
                  + contrastive(forget["fisher"], retain["fisher"], lam))


def top_neurons(scores: torch.Tensor, k: int, layers: list[int] | None = None) -> list[tuple[int, int, float]]:
    """The k highest-scoring (layer, unit, score), optionally restricted to `layers`."""
    masked = scores.clone().float()
    if layers is not None:
        keep = torch.zeros(scores.shape[0], dtype=torch.bool)
        keep[layers] = True
        masked[~keep] = float("-inf")
    values, flat = torch.topk(masked.flatten(), min(k, masked.numel()))
    width = scores.shape[1]
    return [(int(i) // width, int(i) % width, float(v)) for v, i in zip(values, flat) if v != float("-inf")]


def score_tensors(forget, retain, lam: float = 1.0) -> dict[str, torch.Tensor]:
    """Every score the mask can rank, from forget and retain `NeuronStats`: `{forget,retain}.{saliency,fisher}`,
    `contrastive.{saliency,fisher}` and `combined`, each (L, I) (what attribute/scores.safetensors holds)."""
    from agmask.attribution.registry import SCORES

    tensors = {f"{which}.{s}": stats.mean(s) for which, stats in (("forget", forget), ("retain", retain))
               for s in SCORES}
    for s in SCORES:
        tensors[f"contrastive.{s}"] = contrastive(forget.mean(s), retain.mean(s), lam)
    tensors["combined"] = combined_score({s: forget.mean(s) for s in SCORES}, {s: retain.mean(s) for s in SCORES}, lam)
    return tensors


def layer_rankings(forget_sensitivity: torch.Tensor, combined: torch.Tensor, top_k: int) -> dict[str, list[int]]:
    """The two layer orders the mask chooses layers by: `layers_by_sensitivity` (forget gradient norm, (L,)) and
    `layers_by_top_neurons` (where the `top_k` best combined neurons sit; ties in layer order), with the count of
    top neurons per layer (`top_neurons_per_layer`)."""
    import numpy as np

    top = top_neurons(combined, top_k)
    per_layer = np.bincount([l for l, _, _ in top], minlength=combined.shape[0])
    return {"layers_by_sensitivity": torch.argsort(forget_sensitivity, descending=True).tolist(),
            "layers_by_top_neurons": [int(i) for i in np.argsort(-per_layer, kind="stable")],
            "top_neurons_per_layer": per_layer.tolist()}
