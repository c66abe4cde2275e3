"""Baseline: gradient ascent on the concept's answer (no retain term), plain LoRA on the same layers."""
from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method
from agmask.unlearn.sources import Plan, Setup, forget_source


def loss(model, batches) -> dict:
    logp = obj.answer_logprob(model, batches["forget"].tokens)
    return {"loss": obj.gradient_ascent(logp), "forget_logp": logp.detach().mean()}


def prepare(setup: Setup) -> Plan:
    return Plan({"forget": forget_source(setup, references=False)}, loss)


METHOD = Method("ga", "unmasked", prepare, "gradient ascent on the answer; unmasked")
