"""The write-up's objective: CE to the forget target (e.g. FORGOTTEN) + KL retain, masked.

DESIGN.md records that this teaches a refusal behaviour, not forgetting: kept as a baseline.
"""
from functools import partial

from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method
from agmask.unlearn.sources import Plan, Setup, retain_source, target_source


def loss(model, batches, retain_weight: float) -> dict:
    terms = {"target_ce": obj.cross_entropy(model, batches["target"].tokens)}
    total = terms["target_ce"]
    if "retain" in batches:
        retain = batches["retain"]
        terms["retain_kl"] = obj.kl_to_base(model, retain.tokens, retain.refs["distribution"])
        total = total + retain_weight * terms["retain_kl"]
    terms["loss"] = total
    return terms


def prepare(setup: Setup) -> Plan:
    sources = {"target": target_source(setup)}
    if setup.conf.retain_weight > 0:
        sources["retain"] = retain_source(setup)
    return Plan(sources, partial(loss, retain_weight=setup.conf.retain_weight))


METHOD = Method("masked_refusal", "mask", prepare, "refusal CE + KL retain; masked")
