"""The data and loss of AG-Masked-LoRA, shared by the parameterisation ablations (unmasked, random mask)."""
from __future__ import annotations

from functools import partial

import torch

from agmask.unlearn import data
from agmask.unlearn import objectives as obj
from agmask.unlearn.sources import Batch, Plan, Setup, forget_source, retain_source, target_source


def prepare(setup: Setup) -> Plan:
    """The forget prompts with their reference log-probs; the refusal target only when it is weighted; the
    retain prompts with their reference distributions only when the KL is weighted."""
    conf = setup.conf
    sources = {"forget": forget_source(setup)}
    if conf.target_weight > 0:
        sources["target"] = target_source(setup)
    if conf.retain_weight > 0:
        sources["retain"] = retain_source(setup)
    concept_start = data.first_answer_tokens(setup.tokenizer, sources["forget"].examples) \
        if conf.retain_without_concept_start else None
    return Plan(sources, partial(forget_and_retain, conf=conf, concept_start=concept_start),
                early_stop_term="forget_logratio")


def forget_and_retain(model, batches: dict[str, Batch], conf, concept_start: torch.Tensor | None) -> dict:
    """NPO on the concept's answer after the lead (+ optional NPO on its first token alone) + optional
    refusal CE + KL to the base on retain_train.

    The first-token term exists because NPO on the whole answer is satisfied most cheaply by breaking
    a LATER token ("In|ception": "ception" becomes unlikely while "In" keeps its rank); pushing the
    first token down as well removes the start of the answer, which is what the first-token rank sees.
    concept_start: the token ids that start the concept's answers, left out of the retain KL at each retain
    answer's start (`retain_without_concept_start`); None keeps them.
    """
    forget = batches["forget"]
    logp, first = obj.answer_and_first_logprob(model, forget.tokens)
    ref = forget.refs["answer_logprob"]
    terms = {"forget_npo": obj.npo(logp, ref, conf.npo_beta), "forget_logratio": (logp.detach() - ref).mean()}
    loss = conf.forget_weight * terms["forget_npo"]
    if conf.first_token_weight > 0:
        first_ref = forget.refs["first_logprob"]
        if conf.first_token_margin > 0:  # stop pushing once the first token has lost `margin` nats
            name, term = "forget_first_hinge", obj.margin_below(first, first_ref, conf.first_token_margin)
        else:
            name, term = "forget_first_npo", obj.npo(first, first_ref, conf.npo_beta)
        terms[name] = term
        loss = loss + conf.first_token_weight * term
    if "target" in batches:
        terms["target_ce"] = obj.cross_entropy(model, batches["target"].tokens)
        loss = loss + conf.target_weight * terms["target_ce"]
    if "retain" in batches:
        retain = batches["retain"]
        terms["retain_kl"] = obj.kl_to_base(model, retain.tokens, retain.refs["distribution"], concept_start)
        loss = loss + conf.retain_weight * terms["retain_kl"]
    terms["loss"] = loss
    return terms
