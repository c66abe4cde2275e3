"""The causal check of a chosen mask (`agmask ablate`): do its top units carry the concept?

Its top-k units (by the attribution score the mask was ranked with) are mean-ablated (replaced by their
mean over retain_train at the same kind of positions; or zeroed) and so are, in several draws, as many
random units per layer of the same layers (never the top ones). The change of the concept's answer
log-prob on `forget_eval` must be far larger under the top units than under random ones, and the
neighbours' answers (`neighbors`, anchored and unseen apart) must move much less. The measurement is
`attribution.effects` (batched, the clean prefix cached), the same the causal selection uses, so an
effect here equals a direct forward with the units replaced. Answer log-probs are of the first alias.

This reads evaluation sets: it tests a mask already chosen and never chooses anything. The split-half
stability of the top units (training data only) is the overlap of the top-k of two attributions, each on
half of forget_train.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn as nn

from agmask.attribution import SCORES, combined_score, neuron_stats, top_neurons
from agmask.attribution.ablation import jaccard, random_like
from agmask.attribution.effects import Ablation, ablated_logprobs, cache_inputs, encode_prompts

RANDOM_NOT_LOWERED = "random_units_did_not_lower_the_concept"
TOP_NOT_LOWERED = "top_units_did_not_lower_the_concept"


def top_units(mask: torch.Tensor, score: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The k units of `mask` ((L, I) bool) with the highest `score` ((L, I)), in score order; every unit of the
    mask when k is 0 or larger than the mask."""
    idx = torch.nonzero(mask)  # (N, 2): (layer, unit)
    values = score.float()[idx[:, 0], idx[:, 1]]
    order = torch.argsort(values, descending=True, stable=True)
    chosen = idx[order][: k or None]
    return [(int(l), int(u)) for l, u in chosen]


def as_ablation(units: list[tuple[int, int]], width: int) -> Ablation:
    """(layer, unit) pairs -> layer -> (width,) bool, the form `ablated_logprobs` takes."""
    out: Ablation = {}
    for layer, unit in units:
        out.setdefault(layer, torch.zeros(width, dtype=torch.bool))[unit] = True
    return out


def ablation_effects(model: nn.Module, tokenizer, spec, units: list[tuple[int, int]], sets: dict[str, tuple[str, list]],
                     positions: str, means: torch.Tensor, draws: int, seed: int, batch_size: int = 16) -> dict:
    """Per named set ((prompt set, items)): the clean mean answer log-prob, the change under the top units and
    under each random draw (mean over prompts; sd over draws). Empty sets give {"n": 0}."""
    width = means.shape[1]
    gen = torch.Generator().manual_seed(seed)
    draws_units = [random_like(units, width, gen) for _ in range(draws)]
    ablations = [as_ablation(units, width)] + [as_ablation(r, width) for r in draws_units]
    layers = sorted({l for l, _ in units})
    out = {}
    for name, (set_name, items) in sets.items():
        if not items:
            out[name] = {"set": set_name, "n": 0}
            continue
        prompts = encode_prompts(tokenizer, spec, set_name, items, (positions,))
        cache_inputs(model, tokenizer, prompts, layers, batch_size)
        change = ablated_logprobs(model, tokenizer, prompts, ablations, positions, means, batch_size) - prompts.base
        top, rand = change[0], change[1:]  # (N,), (draws, N)
        per_draw = rand.mean(1).tolist()
        out[name] = {
            "set": set_name, "n": len(items), "base_mean_logprob": float(prompts.base.mean()),
            "top": {"mean_change": float(top.mean()), "mean_abs_change": float(top.abs().mean()),
                    "per_prompt": top.tolist()},
            "random": {"mean_change": statistics.fmean(per_draw),
                       "sd_change": statistics.stdev(per_draw) if len(per_draw) > 1 else None,
                       "mean_abs_change": float(rand.abs().mean()), "per_draw": per_draw},
        }
    return out


def summary(effects: dict, concept: str = "forget_eval") -> dict:
    """The ratios the targets read: how much more the top units lower the concept than random ones, and how far
    the neighbours move (mean |change|) per nat the concept falls. An undefined ratio is null with a flag."""
    c = effects.get(concept) or {}
    if not c.get("n"):
        return {"top_vs_random": None, "neighbour_vs_concept": {}, "flag": f"no {concept} items"}
    top_drop, random_drop = -c["top"]["mean_change"], -c["random"]["mean_change"]
    out = {"concept_drop_top": top_drop, "concept_drop_random": random_drop, "flag": None}
    if top_drop <= 0:
        out.update(top_vs_random=None, flag=TOP_NOT_LOWERED)
    elif random_drop <= 0:
        out.update(top_vs_random=None, flag=RANDOM_NOT_LOWERED)
    else:
        out["top_vs_random"] = top_drop / random_drop
    out["neighbour_vs_concept"] = {
        name.removeprefix("neighbors."): (e["top"]["mean_abs_change"] / top_drop if top_drop > 0 else None)
        for name, e in effects.items() if name.startswith("neighbors") and e.get("n")}
    return out


def split_half_jaccard(model: nn.Module, tokenizer, spec, forget_items: list, retain_items: list, k: int,
                       retain_weight: float, positions: str, batch_size: int, seed: int) -> dict:
    """Jaccard overlap of the top-k combined-score units of two attributions, each on a random half of
    `forget_items` (retain side: all of `retain_items`), with its chance level k / (2N - k)."""
    if len(forget_items) < 2:
        return {"skipped": "forget_train needs at least 2 items to split"}
    perm = torch.randperm(len(forget_items), generator=torch.Generator().manual_seed(seed)).tolist()
    half = len(perm) // 2
    halves = [[forget_items[i] for i in perm[:half]], [forget_items[i] for i in perm[half:]]]
    retain = neuron_stats(model, tokenizer, spec, "retain_train", retain_items, batch_size, positions=positions)
    tops = []
    for items in halves:
        forget = neuron_stats(model, tokenizer, spec, "forget_train", items, batch_size, positions=positions)
        comb = combined_score({s: forget.mean(s) for s in SCORES}, {s: retain.mean(s) for s in SCORES}, retain_weight)
        tops.append([(l, u) for l, u, _ in top_neurons(comb, k)])
    total = comb.numel()
    return {"k": k, "jaccard": jaccard(*tops), "chance": k / (2 * total - k), "halves": [len(h) for h in halves],
            "score": "combined", "retain_weight": retain_weight, "positions": positions}
