"""The write-up's objective: CE to the forget target (e.g. FORGOTTEN) + KL retain, masked.

DESIGN.md records that this teaches a refusal behaviour, not forgetting: kept as a baseline.
"""
from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method


def loss(inputs, conf) -> dict:
    terms = {"target_ce": obj.cross_entropy(inputs.model, inputs.target)}
    total = terms["target_ce"]
    if conf.retain_weight > 0:
        terms["retain_kl"] = obj.kl_to_base(inputs.model, inputs.retain, inputs.retain_dist)
        total = total + conf.retain_weight * terms["retain_kl"]
    terms["loss"] = total
    return terms


METHOD = Method("masked_refusal", "mask", loss, ("retain_dist", "target"), "refusal CE + KL retain; masked")
