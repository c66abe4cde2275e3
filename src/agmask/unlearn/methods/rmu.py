"""Baseline: RMU. Push the residual stream of the last adapted layer towards a fixed random direction on
forget prompts, keep it at the base's on retain prompts; plain LoRA on the same layers."""
from functools import partial

import torch

from agmask.unlearn import data
from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method
from agmask.unlearn.sources import Plan, Setup, forget_source


def loss(model, batches, layer: int, control: torch.Tensor, alpha: float) -> dict:
    retain = batches["retain"]
    forget = obj.rmu_forget(model, batches["forget"].tokens, layer, control)
    kept = obj.rmu_retain(model, retain.tokens, layer, retain.refs["residual"])
    return {"loss": forget + alpha * kept, "rmu_forget": forget, "rmu_retain": kept}


def prepare(setup: Setup) -> Plan:
    """The control vector: uniform in [0, 1)^H from the seeded generator, scaled to norm `rmu_steering`."""
    conf = setup.conf
    hidden = setup.model.get_base_model().config.hidden_size
    control = torch.rand(hidden, generator=setup.generator)  # (H,)
    control = conf.rmu_steering * control / control.norm()
    layer = max(setup.layers)
    retain = data.retain_set(setup.tokenizer, setup.spec, conf)
    sources = {"forget": forget_source(setup, references=False),
               "retain": setup.source(retain, draw="retain",
                                      residual=data.base_residuals(setup.model, setup.tokenizer, retain, layer))}
    return Plan(sources, partial(loss, layer=layer, control=control, alpha=conf.rmu_alpha))


METHOD = Method("rmu", "unmasked", prepare, "RMU misdirection + residual retain; unmasked")
