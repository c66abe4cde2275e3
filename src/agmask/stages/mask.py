"""Stage 5, mask: choose the neurons the adapter may touch.

`selection=score` (default): the top of the combined contrastive score in the most concept-relevant
layers by attribution. `selection=causal`: attribution proposes candidates, mean-ablation measures them
and chooses the layers (`agmask.masking.causal`); this loads the model.

Writes `mask/mask.safetensors` (bool (layers, intermediate): `mask`, and the same-size ablation masks
`random` (same layers, same count per layer) and `full_layers` (every unit of the selected layers);
with causal selection also `candidates`, every measured unit) and `mask/mask.json` (per layer: neuron
ids and scores; totals; with causal selection the measured effects under `causal` and, per layer, each
chosen unit's group and effects).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import field_validator

from agmask.config import Fraction, NonNegativeInt, PositiveFloat, PositiveInt, nearest, stage_options
from agmask.errors import StageError
from agmask.files import load_tensors, read_json, save_tensors, write_json
from agmask.masking import choose_layers, full_layer_mask, mask_from_scores, random_mask_like
from agmask.masking.causal import CausalOptions, causal_selection

NAME = "mask"
DIR = "mask"
DEPENDS: tuple[str, ...] = ("attribute",)
LAYER_CRITERIA = {"top_neurons": "layers_by_top_neurons", "sensitivity": "layers_by_sensitivity"}
DEFAULT_K = 256
# Without an explicit k, at most this share of the selected layers' neurons: a tiny test model (240 neurons)
# then still gets a strict subset, so its runs exercise the mask; real models (>= 6144) keep DEFAULT_K.
DEFAULT_K_MAX_SHARE = 0.25


def SCORES_ANSWERS(conf) -> bool:  # noqa: N802 (the stage attribute agmask.currency reads)
    """A causal selection measures answer log-probs (agmask.scoring.SCORING_VERSION joins its input hash)."""
    return conf.selection == "causal"


def score_names() -> list[str]:
    """The keys of attribute/scores.safetensors."""
    from agmask.attribution import SCORES

    return [f"{which}.{s}" for which in ("forget", "retain", "contrastive") for s in SCORES] + ["combined"]


@stage_options
class Config:
    method: Literal["topk", "per_layer", "threshold"] = field(default="topk", metadata={
        "help": "topk: the k best neurons of the selected layers; per_layer: k / layers in each; threshold: "
                "every neuron scoring above mask.threshold"})
    k: PositiveInt | None = field(default=None, metadata={
        "help": f"neurons to select; default {DEFAULT_K}, at most {DEFAULT_K_MAX_SHARE:g} of the selected layers' "
                "neurons (logged when that caps it)"})
    threshold: float | None = field(default=None, metadata={"help": "score threshold of method=threshold"})
    score: str = field(default="combined", metadata={"help": "the attribution score ranked: combined, "
                                                             "contrastive.saliency, forget.fisher, ..."})
    num_layers: NonNegativeInt = field(default=0, metadata={
        "help": "score selection: the k best neurons of the model come from this many of the most concept-relevant "
                "layers; 0 = every layer (the default: a 4-layer choice changes with the prompts, and every layer "
                "was preferred on 3 of 5 concepts' training halves, docs/METHOD.md)"})
    layer_criterion: Literal["top_neurons", "sensitivity"] = field(default="top_neurons", metadata={
        "help": "how layers are ranked: top_neurons (where the top-k combined neurons sit) or sensitivity "
                "(forget gradient norm)"})
    layers: list[NonNegativeInt] = field(default_factory=list, metadata={
        "help": "explicit layers, e.g. [10, 11]; they override num_layers, layer_criterion and min_depth"})
    min_depth: Fraction = field(default=0.0, metadata={
        "help": "layers below this share of the model's depth are never chosen by num_layers (0.5: the upper half)"})

    selection: Literal["score", "causal"] = field(default="score", metadata={
        "help": "score: the top of mask.score; causal: mask.score proposes candidates, mean-ablation on the "
                "training sets measures them and chooses the layers (loads the model)"})
    causal_layers: NonNegativeInt = field(default=4, metadata={
        "help": "causal: layers kept from the layer sweep; 0 = every layer (no sweep)"})
    candidates: PositiveInt = field(default=128, metadata={"help": "causal: candidate units per layer, by mask.score"})
    group_size: PositiveInt = field(default=16, metadata={
        "help": "causal: candidates are measured in groups of this many consecutive attribution ranks"})
    causal_items: NonNegativeInt = field(default=16, metadata={
        "help": "causal: prompts measured per side (forget_train; neighbour-type retain_train), spread over "
                "the set; 0 = all"})
    causal_positions: Literal["answer", "all", "subject", "prompt"] = field(default="prompt", metadata={
        "help": "causal: where a candidate group is mean-ablated: prompt (every token from the user message on), "
                "all, subject or answer"})
    sweep_positions: Literal["answer", "all", "subject", "prompt"] = field(default="subject", metadata={
        "help": "causal: where each layer's whole MLP is mean-ablated in the layer sweep"})
    neighbour_floor: PositiveFloat = field(default=0.05, metadata={
        "help": "causal: nats; ratio = concept effect / max(neighbour effect, this)"})
    causal_batch_size: PositiveInt = field(default=16, metadata={"help": "causal: rows (ablation x prompt) per forward"})

    @field_validator("score")
    @classmethod
    def _known_score(cls, v: str) -> str:
        names = score_names()
        if v not in names:
            raise ValueError(f"unknown score {v!r}{nearest(v, names)} (choose {', '.join(names)})")
        return v

    def __post_init__(self) -> None:
        if self.method == "threshold" and self.threshold is None:
            raise ValueError("method=threshold needs mask.threshold")


def effective_k(conf: Config, layers: list[int], intermediate_size: int, log) -> int:
    """mask.k, or the default capped at DEFAULT_K_MAX_SHARE of the selected layers' neurons."""
    if conf.k is not None:
        return conf.k
    cap = max(1, int(DEFAULT_K_MAX_SHARE * len(layers) * intermediate_size))
    if cap < DEFAULT_K:
        log(f"mask: k {cap} (the default {DEFAULT_K} capped at {DEFAULT_K_MAX_SHARE:g} of the "
            f"{len(layers) * intermediate_size} neurons of layers {layers}; set mask.k to choose)")
    return min(DEFAULT_K, cap)


PRESETS = {"demo": {}, "full": {}}


def default_k(conf: Config, intermediate_size: int, log) -> int:
    """The causal selection's k before its layers are known: mask.k, or the default capped as `effective_k`
    caps it for `causal_layers` (or the explicit) layers."""
    count = len(conf.layers) or conf.causal_layers or 1
    return effective_k(conf, list(conf.layers) or list(range(count)), intermediate_size, log)


def causal_options(conf: Config, seed: int, k: int | None = None) -> CausalOptions:
    """The causal selection's options from the stage's (k: mask.k or, unset, DEFAULT_K)."""
    return CausalOptions(k=k or conf.k or DEFAULT_K, num_layers=conf.causal_layers, layers=tuple(conf.layers), candidates=conf.candidates,
                         group_size=conf.group_size, items=conf.causal_items, positions=conf.causal_positions,
                         sweep_positions=conf.sweep_positions, neighbour_floor=conf.neighbour_floor,
                         batch_size=conf.causal_batch_size, seed=seed)


def chosen_score(conf: Config, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """The attribution score mask.score names, (layers, intermediate)."""
    if conf.score not in scores:
        raise StageError(f"mask.score={conf.score!r} is not an attribution score (have: {', '.join(sorted(scores))})")
    return scores[conf.score]


@dataclass
class Selection:
    """A chosen mask and what mask.json records about how it was chosen."""

    mask: torch.Tensor  # (L, I) bool
    layers: list[int]
    header: dict  # method, selection, score, k (and the layer criterion of a causal selection)
    extra: dict = field(default_factory=dict)  # more tensors for mask.safetensors (causal: candidates)
    unit_effects: dict = field(default_factory=dict)  # causal: (layer, unit) -> its measured group
    record: dict | None = None  # causal: the measured effects


def min_layer(conf: Config, num_layers: int) -> int:
    """The first layer `mask.min_depth` lets the layer ranking choose."""
    return math.ceil(conf.min_depth * num_layers - 1e-9)


def select(conf: Config, score: torch.Tensor, rankings: dict, seed: int, log, causal=None) -> Selection:
    """The mask `conf` asks for from a (L, I) attribution score and the attribution's layer rankings
    (`layers_by_top_neurons`, `layers_by_sensitivity`). A causal selection needs `causal` = (model, tokenizer,
    spec, reporter): it mean-ablates candidates on the spec's training sets."""
    if conf.selection == "causal":
        model, tokenizer, spec, reporter = causal
        k = default_k(conf, score.shape[1], log)
        chosen = causal_selection(model, tokenizer, spec, score, causal_options(conf, seed, k), reporter)
        return Selection(chosen.mask, sorted(torch.nonzero(chosen.mask.any(1)).flatten().tolist()),
                         {"method": "causal", "selection": "causal", "score": conf.score, "k": k,
                          "layer_criterion": "causal sweep" if chosen.record["layer_sweep"] else "given"},
                         {"candidates": chosen.candidates},
                         {key: chosen.groups[i] for key, i in chosen.unit_groups.items()}, chosen.record)
    layers = choose_layers(rankings[LAYER_CRITERIA[conf.layer_criterion]], conf.num_layers, conf.layers, score.shape[0],
                           min_layer(conf, score.shape[0]))
    k = effective_k(conf, layers, score.shape[1], log)
    mask = mask_from_scores(score, layers, conf.method, k, conf.threshold)
    return Selection(mask, layers, {"method": conf.method, "selection": "score", "score": conf.score, "k": k})


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    attribute = Path(run_dir) / "attribute"
    score = chosen_score(conf, load_tensors(attribute / "scores.safetensors"))  # (L, I)
    causal = None
    if conf.selection == "causal":
        model, tokenizer, _ = session.model()
        causal = (model, tokenizer, session.spec, session.reporter)
    rankings = {} if causal else read_json(attribute / "layers.json")
    chosen = select(conf, score, rankings, cfg.seed, session.reporter.log, causal)
    mask, layers, extra, unit_effects, header = (chosen.mask, chosen.layers, chosen.extra, chosen.unit_effects,
                                                 chosen.header)
    random = random_mask_like(mask, torch.Generator().manual_seed(cfg.seed))
    out = Path(run_dir) / DIR
    save_tensors(out / "mask.safetensors",
                 {"mask": mask, "random": random, "full_layers": full_layer_mask(mask), **extra})
    per_layer = {}
    for layer in torch.nonzero(mask.any(1)).flatten().tolist():
        units = torch.nonzero(mask[layer]).flatten()
        order = torch.argsort(score[layer, units], descending=True)
        row = {"units": units[order].tolist(), "scores": score[layer, units[order]].tolist()}
        if unit_effects:  # a unit was measured as part of its group: the group's effects per unit
            groups = [unit_effects[(layer, u)] for u in row["units"]]
            row["group_rank"] = [g.rank for g in groups]
            row["concept_effect"] = [g.effect.concept / len(g.units) for g in groups]
            row["neighbour_effect"] = [g.effect.neighbour / len(g.units) for g in groups]
        per_layer[str(layer)] = row
    total = mask.numel()
    write_json(out / "mask.json", {
        **header, "layers": layers, "selected": int(mask.sum()),
        "total_mlp_neurons": total, "fraction": int(mask.sum()) / total, "per_layer": per_layer,
        **({"causal": chosen.record} if chosen.record is not None else {}),
    })
