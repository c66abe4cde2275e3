"""Causal neuron selection: attribution proposes, mean-ablation decides.

1. Layers by measured effect (unless given): each layer's whole MLP is mean-ablated at the prompts'
   subject tokens (`sweep_positions`), one layer at a time; a layer's effect is how far the concept's
   answer log-prob falls on forget_train (concept effect) against how far the neighbours' answers move
   (neighbour effect, mean |change|). The layers with the largest concept effect per unit of neighbour
   effect are kept.
2. Candidates: in each kept layer, the `candidates` units with the highest attribution score, in groups
   of `group_size` consecutive ranks. Each group is mean-ablated on its own at `positions` and its two
   effects measured. The default, `prompt`, is every token from the user message on: the adapter acts
   at every position, and the chat header before the user message (system prompt) is the same for every
   prompt, so ablating it there would shift every prompt alike; leaving it clean also lets its keys and
   values be computed once (see `attribution.effects`).
3. The mask takes the groups with the largest concept effect per unit of neighbour effect (only groups
   that lower the concept at all) until it holds `k` units; the last group is cut by attribution rank.
   A unit is measured only as part of its group: its effects are recorded as the group's divided by
   the group's size.
4. Check: the whole mask, and a random mask of the same size in the same layers, mean-ablated at once.

Everything is measured on training data: forget_train for the concept, and for the neighbours the
retain_train items answered by one of the concept's candidates (all of retain_train if none is).
Means are taken over retain_train at the same kind of positions.

Cost (forwards only, no backward): one forward over retain_train (means), one over the measured prompts
(clean log-probs and each needed layer's input), then per ablation only the layers from the ablated
one up and the tokens after the chat header: the sweep costs (L + 1) / 2 forwards of the measured
prompts, each group (L - l) / L. Several ablations share one batched forward (one row per ablation and
prompt). Estimate for the 0.5B model (24 layers; prompts of ~57 tokens, 24 of them the shared header;
16 + 16 measured prompts; 4 layers x 8 groups; layers near 8): sweep ~1.2, groups ~2.0, means, clean
forward and check ~0.6 attribution passes (106 prompts, forward + backward ~1.9 forwards): ~3.8x.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from agmask.attribution.effects import (Effect, ablated_logprobs, activation_means, cache_inputs, drop_inputs,
                                        effects, encode_prompts)
from agmask.errors import StageError
from agmask.masking.select import random_mask_like
from agmask.progress import SILENT, Reporter
from agmask.scoring import select_items


@dataclass(frozen=True)
class CausalOptions:
    k: int = 256  # units in the mask
    num_layers: int = 4  # layers kept from the sweep; 0 = all layers (no sweep)
    layers: tuple[int, ...] = ()  # explicit layers: no sweep
    candidates: int = 128  # per kept layer, by attribution score
    group_size: int = 16
    items: int = 16  # prompts per side (forget_train, neighbours), spread over the set; 0 = all
    positions: str = "prompt"  # where a candidate group is mean-ablated
    sweep_positions: str = "subject"  # where a layer's whole MLP is mean-ablated in the sweep
    neighbour_floor: float = 0.05  # nats: the smallest neighbour effect a ratio divides by
    batch_size: int = 16  # rows (ablation x prompt) per forward
    seed: int = 0  # the random comparison mask


@dataclass
class Group:
    layer: int
    rank: int  # attribution rank of its first unit within the layer's candidates
    units: list[int]  # in attribution order
    effect: Effect | None = None


@dataclass
class CausalSelection:
    mask: torch.Tensor  # (L, I) bool
    candidates: torch.Tensor  # (L, I) bool: every measured unit
    record: dict  # JSON-safe, deterministic: mask.json's `causal` entry
    unit_groups: dict[tuple[int, int], int] = field(default_factory=dict)  # (layer, unit) of the mask -> group index
    groups: list[Group] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per phase (not written to the artefacts)


def neighbour_items(spec) -> tuple[list, str]:
    """retain_train items whose answer is one of the concept's candidates (and not the concept), and a note."""
    candidates = {c.casefold() for c in spec.candidates}
    chosen = [it for it in spec.retain_train
              if it.answer and it.answer.casefold() in candidates and not spec.is_concept_answer(it.answer)]
    if chosen:
        return chosen, "retain_train items answered by one of the concept's candidates"
    return list(spec.retain_train), "all of retain_train (no item is answered by one of the concept's candidates)"


def _spread(items: list, n: int) -> list:
    return [it for _, it in select_items(items, n)]


def candidate_groups(score: torch.Tensor, layers: list[int], candidates: int, group_size: int) -> list[Group]:
    """Per layer, the top `candidates` units by score, cut into groups of consecutive ranks."""
    groups = []
    for layer in layers:
        top = torch.topk(score[layer].float(), min(candidates, score.shape[1])).indices.tolist()
        groups += [Group(layer, lo, top[lo : lo + group_size]) for lo in range(0, len(top), group_size)]
    return groups


def choose_groups(groups: list[Group], k: int, floor: float) -> list[tuple[int, list[int]]]:
    """(group index, units taken) in order of concept effect per unit of neighbour effect, until k units;
    groups that do not lower the concept are never taken."""
    eligible = sorted((i for i, g in enumerate(groups) if g.effect.concept > 0),
                      key=lambda i: (groups[i].effect.ratio(floor), groups[i].effect.concept), reverse=True)
    taken, count = [], 0
    for i in eligible:
        if count >= k:
            break
        units = groups[i].units[: k - count]
        taken.append((i, units))
        count += len(units)
    return taken


def _ablate(layer_units: dict[int, list[int]], width: int) -> dict[int, torch.Tensor]:
    out = {}
    for layer, units in layer_units.items():
        out[layer] = torch.zeros(width, dtype=torch.bool)
        out[layer][units] = True
    return out


def _units_of(mask: torch.Tensor) -> dict[int, list[int]]:
    return {l: torch.nonzero(mask[l]).flatten().tolist() for l in torch.nonzero(mask.any(1)).flatten().tolist()}


def causal_selection(model: nn.Module, tokenizer, spec, score: torch.Tensor, opts: CausalOptions,
                     reporter: Reporter = SILENT) -> CausalSelection:
    """The mask (see the module docstring) and the measurements behind it."""
    n_layers, width = score.shape
    if opts.k < 1 or opts.candidates < 1 or opts.group_size < 1:
        raise StageError("mask.k, mask.candidates and mask.group_size must be >= 1")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        seconds[phase] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    sweep = not opts.layers and opts.num_layers != 0
    kinds = tuple(dict.fromkeys([opts.positions] + ([opts.sweep_positions] if sweep else [])))
    neighbours_all, neighbour_note = neighbour_items(spec)
    forget = encode_prompts(tokenizer, spec, "forget_train", _spread(spec.forget_train, opts.items), kinds)
    neighbours = encode_prompts(tokenizer, spec, "retain_train", _spread(neighbours_all, opts.items), kinds)
    retain = encode_prompts(tokenizer, spec, "retain_train", list(spec.retain_train), kinds)
    with reporter.task("causal selection: retain_train means", len(retain)) as adv:
        means = activation_means(model, tokenizer, retain, advance=adv)  # kind -> (L, I)
    lap("means")

    fixed = sorted(set(opts.layers)) if opts.layers else list(range(n_layers))
    bad = [l for l in fixed if not 0 <= l < n_layers]
    if bad:
        raise StageError(f"unknown layer(s) {bad}: the model has layers 0..{n_layers - 1}")
    needed = list(range(n_layers)) if sweep else fixed
    with reporter.task("causal selection: clean forward", len(forget) + len(neighbours)) as adv:
        for prompts in (forget, neighbours):
            cache_inputs(model, tokenizer, prompts, needed, opts.batch_size, adv)
    lap("clean")

    def measure(ablations: list[dict[int, torch.Tensor]], kind: str, adv=None) -> list[Effect]:
        f = ablated_logprobs(model, tokenizer, forget, ablations, kind, means[kind], opts.batch_size, adv)
        n = ablated_logprobs(model, tokenizer, neighbours, ablations, kind, means[kind], opts.batch_size, adv)
        return effects(forget, neighbours, f, n)

    layer_sweep = None
    if sweep:
        every = torch.ones(width, dtype=torch.bool)
        rows = n_layers * (len(forget) + len(neighbours))
        with reporter.task("causal selection: layer sweep", rows) as adv:
            swept = [measure([{layer: every}], opts.sweep_positions, adv)[0] for layer in range(n_layers)]
        layer_sweep = [{"layer": l, **e.to_dict(opts.neighbour_floor)} for l, e in enumerate(swept)]
        order = sorted(range(n_layers), key=lambda l: (swept[l].concept > 0, swept[l].ratio(opts.neighbour_floor)),
                       reverse=True)
        layers = sorted(order[: opts.num_layers])
        drop_inputs(forget, layers)
        drop_inputs(neighbours, layers)
        lap("sweep")
    else:
        layers, order = fixed, None

    groups = candidate_groups(score, layers, opts.candidates, opts.group_size)
    with reporter.task("causal selection: candidate groups", len(groups) * (len(forget) + len(neighbours))) as adv:
        for layer in layers:
            mine = [g for g in groups if g.layer == layer]
            for g, e in zip(mine, measure([_ablate({layer: g.units}, width) for g in mine], opts.positions, adv)):
                g.effect = e
    lap("groups")

    taken = choose_groups(groups, opts.k, opts.neighbour_floor)
    if not taken:
        raise StageError(f"no candidate group lowers the concept's answer log-prob in layers {layers}; raise "
                         "mask.candidates, or choose other layers (mask.layers, mask.causal_layers)")
    mask = torch.zeros(n_layers, width, dtype=torch.bool)
    unit_groups = {}
    for i, units in taken:
        mask[groups[i].layer, units] = True
        unit_groups.update({(groups[i].layer, u): i for u in units})
    candidates = torch.zeros_like(mask)
    for g in groups:
        candidates[g.layer, g.units] = True
    random = random_mask_like(mask, torch.Generator().manual_seed(opts.seed))
    chosen, rand = measure([_ablate(_units_of(mask), width), _ablate(_units_of(random), width)], opts.positions)
    lap("check")

    floor = opts.neighbour_floor
    record = {
        "positions": opts.positions, "sweep_positions": opts.sweep_positions if sweep else None,
        "candidates_per_layer": min(opts.candidates, width), "group_size": opts.group_size, "neighbour_floor": floor,
        "means_over": f"retain_train ({len(retain)} prompts, at the same kind of positions)",
        "items": {"forget_train": len(forget), "neighbours": len(neighbours), "neighbour_set": neighbour_note},
        "effects": "concept_effect: mean fall of forget_train answer log-probs (nats, > 0 = lowered); "
                   "neighbour_effect: mean |change| of the neighbours' answer log-probs; ratio: concept_effect / "
                   f"max(neighbour_effect, {floor}); a unit's effects are its group's divided by the group size",
        "layer_sweep": layer_sweep,
        "layers_by_effect": order,
        "groups": [{"layer": g.layer, "rank": g.rank, "units": g.units, **g.effect.to_dict(floor),
                    "taken": next((len(u) for i, u in taken if groups[i] is g), 0)} for g in groups],
        "check": "the whole mask and the same-size random mask, each mean-ablated at once on the prompts the groups "
                 "were chosen on (in-sample: `agmask ablate` measures the held-out effects)",
        "mask_effect": chosen.to_dict(floor),
        "random_effect": rand.to_dict(floor),  # the same random mask as mask.safetensors' `random` (same seed)
    }
    return CausalSelection(mask, candidates, record, unit_groups, groups, seconds)
