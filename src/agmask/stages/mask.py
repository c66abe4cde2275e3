"""Stage 5, mask: choose the neurons the adapter may touch, from the combined contrastive score.

Writes `mask/mask.safetensors` (bool (layers, intermediate): `mask`, and the same-size ablation masks
`random` (same layers, same count per layer) and `full_layers` (every unit of the selected layers))
and `mask/mask.json` (per layer: neuron ids and scores; totals).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from agmask.errors import StageError
from agmask.files import load_tensors, read_json, save_tensors, write_json
from agmask.masking import choose_layers, full_layer_mask, mask_from_scores, random_mask_like

NAME = "mask"
DIR = "mask"
DEPENDS: tuple[str, ...] = ("attribute",)
LAYER_CRITERIA = {"top_neurons": "layers_by_top_neurons", "sensitivity": "layers_by_sensitivity"}


@dataclass(frozen=True)
class Config:
    method: str = "topk"  # topk | per_layer | threshold
    k: int = 256
    threshold: float | None = None
    score: str = "combined"  # a key of attribute/scores.safetensors
    num_layers: int = 4  # the most concept-relevant layers; 0 = all
    layer_criterion: str = "top_neurons"  # top_neurons (where the top-k combined neurons sit) | sensitivity
    layers: list[int] = field(default_factory=list)  # explicit layers override the criterion


PRESETS = {"demo": {}, "full": {}}


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    attribute = Path(run_dir) / "attribute"
    scores = load_tensors(attribute / "scores.safetensors")
    if conf.score not in scores:
        raise StageError(f"mask.score={conf.score!r} is not an attribution score (have: {', '.join(sorted(scores))})")
    if conf.layer_criterion not in LAYER_CRITERIA:
        raise StageError(f"unknown mask.layer_criterion {conf.layer_criterion!r} (choose {', '.join(LAYER_CRITERIA)})")
    score = scores[conf.score]  # (L, I)
    ranking = read_json(attribute / "layers.json")[LAYER_CRITERIA[conf.layer_criterion]]
    layers = choose_layers(ranking, conf.num_layers, conf.layers, score.shape[0])
    mask = mask_from_scores(score, layers, conf.method, conf.k, conf.threshold)
    random = random_mask_like(mask, torch.Generator().manual_seed(cfg.seed))
    out = Path(run_dir) / DIR
    save_tensors(out / "mask.safetensors", {"mask": mask, "random": random, "full_layers": full_layer_mask(mask)})
    per_layer = {}
    for layer in torch.nonzero(mask.any(1)).flatten().tolist():
        units = torch.nonzero(mask[layer]).flatten()
        order = torch.argsort(score[layer, units], descending=True)
        per_layer[str(layer)] = {"units": units[order].tolist(), "scores": score[layer, units[order]].tolist()}
    total = mask.numel()
    write_json(out / "mask.json", {
        "method": conf.method, "score": conf.score, "layers": layers, "selected": int(mask.sum()),
        "total_mlp_neurons": total, "fraction": int(mask.sum()) / total, "per_layer": per_layer,
    })
