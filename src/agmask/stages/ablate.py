"""Optional: the causal check of the mask: mean-ablate its top units vs random units of the same layers (forget_eval, neighbours).

A test of the mask already chosen (it reads evaluation sets, so it never chooses anything; see
`agmask.comparison.ablation`): the top-k units of `mask/mask.safetensors`, ranked by the attribution
score the mask stage used, are mean-ablated (their mean over retain_train at the same positions) or
zeroed, and so are `draws` sets of as many random units per layer in the same layers. Reported: the
change of the concept's answer log-prob on forget_eval and of the neighbours' on `neighbors`, anchored
and unseen apart; the ratios top / random and neighbour / concept; and (training data only) the
split-half Jaccard of the top-k of two attributions on halves of forget_train, with its chance level.
Cost on the 0.5B model: a few forwards of the evaluation sets per draw (estimate: minutes), plus three
attribution passes on half-sets for the split-half check.

Writes `ablate/ablation.json` and `ablate/ablation.png`.
"""
from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Literal

from agmask.config import NonNegativeInt, PositiveInt, stage_options

NAME = "ablate"
DIR = "ablate"
DEPENDS: tuple[str, ...] = ("attribute", "mask")
READS_OPTIONS: tuple[str, ...] = ("attribute",)  # the split-half attributions use its options
SCORES_ANSWERS = True  # its outputs hold answer scores (agmask.scoring.SCORING_VERSION is in its input hash)
POSITIONS = Literal["all", "answer", "subject", "prompt"]


@stage_options
class Config:
    k: NonNegativeInt = field(default=100, metadata={
        "help": "the mask's top units ablated (by the attribution score the mask was ranked with); 0 = every unit "
                "of the mask"})
    draws: PositiveInt = field(default=5, metadata={"help": "random same-layer unit sets compared with the top units"})
    ablation: Literal["mean", "zero"] = field(default="mean", metadata={
        "help": "mean: replace the units by their mean over retain_train at the same positions; zero: by 0"})
    positions: POSITIONS = field(default="all", metadata={
        "help": "where the units are replaced: all (every real token), answer, subject or prompt"})
    max_items: NonNegativeInt = field(default=0, metadata={
        "help": "items of forget_eval, and of the anchored and unseen neighbours each (spread over families); 0 = all"})
    batch_size: PositiveInt = field(default=16, metadata={"help": "rows (ablation x prompt) per forward"})
    split_half: bool = field(default=True, metadata={
        "help": "also the split-half Jaccard of the top units (two attributions on halves of forget_train)"})


PRESETS = {"demo": {"draws": 3, "max_items": 8}, "full": {}}


def run(cfg, run_dir: Path, session) -> None:
    import torch

    from agmask.attribution.effects import activation_means, encode_prompts
    from agmask.comparison.ablation import ablation_effects, split_half_jaccard, summary, top_units
    from agmask.comparison.figures import ablation_figure
    from agmask.errors import StageError
    from agmask.files import load_tensors, read_json, write_json
    from agmask.scoring import select_items

    conf: Config = session.stage_config(NAME)
    model, tokenizer, info = session.model()
    spec, paths = session.spec, session.paths
    mask = load_tensors(paths.mask)["mask"]
    ranked_by = read_json(paths.stage("mask") / "mask.json")["score"]
    units = top_units(mask, load_tensors(paths.attribute_scores)[ranked_by], conf.k)
    if not units:
        raise StageError("the mask selects no neuron: rerun `agmask mask` with a larger mask.k or other layers")
    if conf.ablation == "mean":
        retain = encode_prompts(tokenizer, spec, "retain_train", list(spec.retain_train), (conf.positions,))
        means = activation_means(model, tokenizer, retain, conf.batch_size)[conf.positions]
        means_over = f"retain_train ({len(retain)} prompts, at {conf.positions} positions)"
    else:
        means, means_over = torch.zeros(info.num_layers, info.intermediate_size), None
    split = spec.neighbor_split()
    sets = {"forget_eval": ("forget_eval", [it for _, it in select_items(spec.forget_eval, conf.max_items)])}
    for status in ("anchored", "unseen"):
        items = [spec.neighbors[i] for i in split[status]]
        sets[f"neighbors.{status}"] = ("neighbors", [it for _, it in select_items(items, conf.max_items)])
    with session.reporter.task("ablating the mask's top units and random ones", len(sets)) as advance:
        effects = {}
        for name, pair in sets.items():
            effects.update(ablation_effects(model, tokenizer, spec, units, {name: pair}, conf.positions, means,
                                            conf.draws, cfg.seed, conf.batch_size))
            advance(1)
    result = {"model": cfg.model, "concept": spec.name, "mask_units": int(mask.sum()), "k": conf.k,
              "units": len(units), "ranked_by": ranked_by, "layers": sorted({l for l, _ in units}),
              "ablation": conf.ablation, "positions": conf.positions, "means_over": means_over, "draws": conf.draws,
              "seed": cfg.seed, "answer": "summed log-prob of the first alias (+ the closing quote) after the set's lead",
              "sets": effects, **summary(effects)}
    if conf.split_half:
        attribute = session.stage_config("attribute")
        n = attribute.max_items or None
        result["split_half"] = split_half_jaccard(model, tokenizer, spec, spec.forget_train[:n], spec.retain_train[:n],
                                                  len(units), attribute.retain_weight, attribute.positions,
                                                  attribute.batch_size, cfg.seed)
    out = Path(run_dir) / DIR
    write_json(out / "ablation.json", result)
    ablation_figure(out / "ablation.png", result)
