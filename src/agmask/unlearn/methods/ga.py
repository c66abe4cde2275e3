"""Baseline: gradient ascent on the concept's answer (no retain term), plain LoRA on the same layers."""
from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method


def loss(inputs, conf) -> dict:
    logp = obj.answer_logprob(inputs.model, inputs.forget)
    return {"loss": obj.gradient_ascent(logp), "forget_logp": logp.detach().mean()}


METHOD = Method("ga", "unmasked", loss, (), "gradient ascent on the answer; unmasked")
