"""Baseline: NPO on the concept's answer (no retain term), plain LoRA on the same layers."""
from functools import partial

from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method
from agmask.unlearn.sources import Plan, Setup, forget_source


def loss(model, batches, beta: float) -> dict:
    forget = batches["forget"]
    logp, ref = obj.answer_logprob(model, forget.tokens), forget.refs["answer_logprob"]
    return {"loss": obj.npo(logp, ref, beta), "forget_logratio": (logp.detach() - ref).mean()}


def prepare(setup: Setup) -> Plan:
    return Plan({"forget": forget_source(setup)}, partial(loss, beta=setup.conf.npo_beta),
                early_stop_term="forget_logratio")


METHOD = Method("npo", "unmasked", prepare, "NPO on the answer; unmasked")
