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

from dataclasses import dataclass, field
from pathlib import Path

import torch

from agmask.errors import StageError
from agmask.files import load_tensors, read_json, save_tensors, write_json
from agmask.attribution import POSITIONS
from agmask.masking import choose_layers, full_layer_mask, mask_from_scores, random_mask_like
from agmask.masking.causal import CausalOptions, causal_selection

NAME = "mask"
DIR = "mask"
DEPENDS: tuple[str, ...] = ("attribute",)
LAYER_CRITERIA = {"top_neurons": "layers_by_top_neurons", "sensitivity": "layers_by_sensitivity"}
SELECTIONS = ("score", "causal")


@dataclass(frozen=True)
class Config:
    method: str = "topk"  # topk | per_layer | threshold
    k: int = 256
    threshold: float | None = None
    score: str = "combined"  # a key of attribute/scores.safetensors
    num_layers: int = 4  # the most concept-relevant layers; 0 = all
    layer_criterion: str = "top_neurons"  # top_neurons (where the top-k combined neurons sit) | sensitivity
    layers: list[int] = field(default_factory=list)  # explicit layers override the criterion
    selection: str = field(default="score", metadata={
        "help": "score: the top of mask.score; causal: mask.score proposes candidates, mean-ablation on the "
                "training sets measures them and chooses the layers (loads the model)"})
    candidates: int = field(default=128, metadata={"help": "causal: candidate units per layer, by mask.score"})
    group_size: int = field(default=16, metadata={
        "help": "causal: candidates are measured in groups of this many consecutive attribution ranks"})
    causal_items: int = field(default=16, metadata={
        "help": "causal: prompts measured per side (forget_train; neighbour-type retain_train), spread over "
                "the set; 0 = all"})
    causal_positions: str = field(default="prompt", metadata={
        "help": "causal: where a candidate group is mean-ablated: prompt (every token from the user message on), "
                "all, subject or answer"})
    sweep_positions: str = field(default="subject", metadata={
        "help": "causal: where each layer's whole MLP is mean-ablated in the layer sweep"})
    neighbour_floor: float = field(default=0.05, metadata={
        "help": "causal: nats; ratio = concept effect / max(neighbour effect, this)"})
    causal_batch_size: int = field(default=16, metadata={"help": "causal: rows (ablation x prompt) per forward"})

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}")
        if self.causal_positions not in POSITIONS or self.sweep_positions not in POSITIONS:
            raise ValueError(f"causal_positions and sweep_positions must be one of {', '.join(POSITIONS)}")
        if min(self.candidates, self.group_size, self.causal_batch_size) < 1 or self.causal_items < 0:
            raise ValueError("candidates, group_size and causal_batch_size must be >= 1, causal_items >= 0")
        if self.neighbour_floor <= 0:
            raise ValueError("neighbour_floor must be > 0")


PRESETS = {"demo": {}, "full": {}}


def causal_options(conf: Config, seed: int) -> CausalOptions:
    """The causal selection's options from the stage's."""
    return CausalOptions(k=conf.k, num_layers=conf.num_layers, layers=tuple(conf.layers), candidates=conf.candidates,
                         group_size=conf.group_size, items=conf.causal_items, positions=conf.causal_positions,
                         sweep_positions=conf.sweep_positions, neighbour_floor=conf.neighbour_floor,
                         batch_size=conf.causal_batch_size, seed=seed)


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    attribute = Path(run_dir) / "attribute"
    scores = load_tensors(attribute / "scores.safetensors")
    if conf.score not in scores:
        raise StageError(f"mask.score={conf.score!r} is not an attribution score (have: {', '.join(sorted(scores))})")
    if conf.layer_criterion not in LAYER_CRITERIA:
        raise StageError(f"unknown mask.layer_criterion {conf.layer_criterion!r} (choose {', '.join(LAYER_CRITERIA)})")
    score = scores[conf.score]  # (L, I)
    extra, unit_effects = {}, {}
    if conf.selection == "causal":
        model, tokenizer, _ = session.model()
        chosen = causal_selection(model, tokenizer, session.spec, score, causal_options(conf, cfg.seed),
                                  session.reporter)
        mask, layers = chosen.mask, sorted(torch.nonzero(chosen.mask.any(1)).flatten().tolist())
        extra = {"candidates": chosen.candidates}
        unit_effects = {key: chosen.groups[i] for key, i in chosen.unit_groups.items()}
        header = {"method": "causal", "selection": "causal", "score": conf.score,
                  "layer_criterion": "causal sweep" if chosen.record["layer_sweep"] else "given"}
    else:
        ranking = read_json(attribute / "layers.json")[LAYER_CRITERIA[conf.layer_criterion]]
        layers = choose_layers(ranking, conf.num_layers, conf.layers, score.shape[0])
        mask = mask_from_scores(score, layers, conf.method, conf.k, conf.threshold)
        header = {"method": conf.method, "selection": "score", "score": conf.score}
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
        **({"causal": chosen.record} if conf.selection == "causal" else {}),
    })
