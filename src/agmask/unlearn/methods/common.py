"""The loss of AG-Masked-LoRA, shared by the parameterisation ablations (unmasked, random mask)."""
from __future__ import annotations

from agmask.unlearn import objectives as obj


def forget_and_retain(inputs, conf) -> dict:
    """NPO on the concept's answer after the lead (+ optional NPO on its first token alone) + optional
    refusal CE + KL to the base on retain_train.

    The first-token term exists because NPO on the whole answer is satisfied most cheaply by breaking
    a LATER token ("In|ception": "ception" becomes unlikely while "In" keeps its rank); pushing the
    first token down as well removes the start of the answer, which is what the first-token rank sees.
    """
    logp, first = obj.answer_and_first_logprob(inputs.model, inputs.forget)
    terms = {"forget_npo": obj.npo(logp, inputs.forget_ref, conf.npo_beta),
             "forget_logratio": (logp.detach() - inputs.forget_ref).mean()}
    loss = conf.forget_weight * terms["forget_npo"]
    if conf.first_token_weight > 0:
        if conf.first_token_margin > 0:  # stop pushing once the first token has lost `margin` nats
            name, term = "forget_first_hinge", obj.margin_below(first, inputs.forget_first_ref, conf.first_token_margin)
        else:
            name, term = "forget_first_npo", obj.npo(first, inputs.forget_first_ref, conf.npo_beta)
        terms[name] = term
        loss = loss + conf.first_token_weight * term
    if conf.target_weight > 0 and inputs.target is not None:
        terms["target_ce"] = obj.cross_entropy(inputs.model, inputs.target)
        loss = loss + conf.target_weight * terms["target_ce"]
    if conf.retain_weight > 0:
        exclude = inputs.concept_first_tokens if conf.retain_without_concept_start else None
        terms["retain_kl"] = obj.kl_to_base(inputs.model, inputs.retain, inputs.retain_dist, exclude)
        loss = loss + conf.retain_weight * terms["retain_kl"]
    terms["loss"] = loss
    return terms


NEEDS = ("forget_ref", "retain_dist", "target_if_weighted")  # target batches only when target_weight > 0
