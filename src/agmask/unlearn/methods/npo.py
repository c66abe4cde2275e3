"""Baseline: NPO on the concept's answer (no retain term), plain LoRA on the same layers."""
from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method


def loss(inputs, conf) -> dict:
    logp = obj.answer_logprob(inputs.model, inputs.forget)
    return {"loss": obj.npo(logp, inputs.forget_ref, conf.npo_beta),
            "forget_logratio": (logp.detach() - inputs.forget_ref).mean()}


METHOD = Method("npo", "unmasked", loss, ("forget_ref",), "NPO on the answer; unmasked")
