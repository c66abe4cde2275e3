"""Stage 3, attribute: per-neuron saliency and Fisher on forget_train and retain_train, contrastive scores.

Writes `attribute/scores.safetensors` ((layers, intermediate) tensors: `{forget,retain}.{saliency,fisher}`,
`contrastive.{saliency,fisher}`, `combined`), `attribute/layers.json` (per-layer sensitivity, Fisher,
activation similarity, the global top neurons) and the figures.
"""
from __future__ import annotations

from dataclasses import field
from typing import Literal
from pathlib import Path

import numpy as np
import torch

from agmask.attribution import layer_rankings, neuron_stats, score_tensors, top_neurons
from agmask.attribution.gradients import attribution_rows
from agmask.attribution import figures
from agmask.config import NonNegativeFloat, NonNegativeInt, PositiveInt, stage_options
from agmask.files import save_tensors, write_json

NAME = "attribute"
DIR = "attribute"
DEPENDS: tuple[str, ...] = ()
PARALLEL = True  # every process of a multi-process launch runs it on its share of the prompts


@stage_options
class Config:
    batch_size: PositiveInt = field(default=8, metadata={"help": "prompts per forward + backward pass"})
    max_items: NonNegativeInt = field(default=0, metadata={
        "help": "forget_train and retain_train prompts used (the first ones); 0 = all"})
    retain_weight: NonNegativeFloat = field(default=0.5, metadata={
        "help": "lambda in the contrastive score rank(forget) - lambda * rank(retain)"})
    all_aliases: bool = field(default=False, metadata={
        "help": "attribute every alias of the concept after each forget prompt (one sample per prompt and alias) "
                "instead of its first alias alone; off: on a person's and a composer's training halves it raised "
                "the violation (docs/METHOD.md)"})
    top_k: PositiveInt = field(default=100, metadata={"help": "neurons listed in layers.json (and counted per layer)"})
    positions: Literal["answer", "all", "subject", "prompt"] = field(default="answer", metadata={
        "help": "where activation x gradient and Fisher are summed: answer (the answer-predicting positions), "
                "all (every real token), subject (the prompt's own tokens) or prompt (every token from the user "
                "message on: all without the chat header); the loss is on the answer either way"})


PRESETS = {"demo": {"max_items": 24}, "full": {}}


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    model, tokenizer, info = session.model()
    spec = session.spec
    forget_items = spec.forget_train[: conf.max_items or None]
    retain_items = spec.retain_train[: conf.max_items or None]
    samples = len(attribution_rows(spec, forget_items, conf.all_aliases)) + len(retain_items)
    with session.reporter.task("attributing (forward + backward)", samples) as adv:
        # several processes: each attributes its block of the prompts, the sums are all-reduced
        forget = neuron_stats(model, tokenizer, spec, "forget_train", forget_items, conf.batch_size, advance=adv,
                              parallel=True, positions=conf.positions, all_aliases=conf.all_aliases)
        retain = neuron_stats(model, tokenizer, spec, "retain_train", retain_items, conf.batch_size, advance=adv,
                              parallel=True, positions=conf.positions)
    tensors = score_tensors(forget, retain, conf.retain_weight)
    combined = tensors["combined"]
    out = Path(run_dir) / DIR
    save_tensors(out / "scores.safetensors", tensors)

    # per-layer views: sensitivity, Fisher, and how similar forget and retain activations are
    f_act, r_act = forget.activation_mean, retain.activation_mean  # (L, I)
    act_cos = torch.nn.functional.cosine_similarity(f_act, r_act, dim=1)  # (L,)
    top = top_neurons(combined, conf.top_k)
    rankings = layer_rankings(forget.layer_sensitivity, combined, conf.top_k)  # the mask chooses layers by these
    layers = {
        "num_layers": info.num_layers, "intermediate_size": info.intermediate_size, "positions": conf.positions,
        "samples": {"forget_train": forget.n, "retain_train": retain.n},
        "forget_sensitivity": forget.layer_sensitivity.tolist(),
        "retain_sensitivity": retain.layer_sensitivity.tolist(),
        "sensitivity_ratio": (forget.layer_sensitivity / retain.layer_sensitivity.clamp(min=1e-12)).tolist(),
        "forget_mean_fisher": forget.mean("fisher").mean(1).tolist(),
        "retain_mean_fisher": retain.mean("fisher").mean(1).tolist(),
        "forget_saliency_mass": forget.mean("saliency").sum(1).tolist(),
        "activation_cosine_forget_retain": act_cos.tolist(),
        **rankings,
        "top_neurons": [{"layer": l, "unit": u, "combined": round(s, 6)} for l, u, s in top],
    }
    write_json(out / "layers.json", layers)

    figures.layer_sensitivity(out / "layer_sensitivity.png", forget.layer_sensitivity, retain.layer_sensitivity,
                              forget.mean("fisher").mean(1), retain.mean("fisher").mean(1))
    figures.top_neuron_heatmap(out / "saliency_heatmap.png", forget.mean("saliency"),
                               "Saliency |sum a*g| on forget_train", "saliency")
    figures.top_neuron_heatmap(out / "fisher_heatmap.png", forget.mean("fisher"),
                               "Fisher information sum g^2 on forget_train", "Fisher")
    figures.layer_correlation(out / "layer_correlation.png", {
        "saliency mass": np.array(layers["forget_saliency_mass"]),
        "mean Fisher": np.array(layers["forget_mean_fisher"]),
        "gradient norm": forget.layer_sensitivity.numpy(),
        "1 - act. cosine (forget vs retain)": 1 - act_cos.numpy(),
    })
