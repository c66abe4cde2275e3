"""The data and loss of AG-Masked-LoRA, shared by the parameterisation ablations (unmasked, random mask)."""
from __future__ import annotations

from functools import partial

import torch

from agmask.unlearn import data
from agmask.unlearn import objectives as obj
from agmask.unlearn.candidates import Titles, candidate_logprobs, recommend_source, recommend_titles
from agmask.unlearn.sources import Batch, Plan, Setup, forget_source, retain_source, target_source


def prepare(setup: Setup) -> Plan:
    """The forget prompts with their reference log-probs; the refusal target only when it is weighted; the
    retain prompts with their reference distributions only when the KL is weighted; the recommendation
    prompts (recommend_train) with their reference title log-probs only when a recommendation term is weighted
    and the concept has them."""
    conf = setup.conf
    sources = {"forget": forget_source(setup)}
    if conf.target_weight > 0:
        sources["target"] = target_source(setup)
    if conf.retain_weight > 0:
        sources["retain"] = retain_source(setup)
    titles = None
    if conf.recommend_weight > 0 or conf.preference_weight > 0:
        if setup.spec.recommend_train:
            titles = recommend_titles(setup.spec, all_candidates=conf.preference_weight > 0)
            sources["recommend"] = recommend_source(setup, titles, conf.recommend_batch_size or None)
        else:
            on = [name for name in ("recommend_weight", "preference_weight") if getattr(conf, name) > 0]
            setup.reporter.log(f"concept {setup.spec.name} has no recommend_train prompts: {' and '.join(on)} "
                               f"{'have' if len(on) > 1 else 'has'} nothing to act on; training without "
                               f"{'them' if len(on) > 1 else 'it'}")
    starts = data.first_answer_tokens(setup.tokenizer, sources["forget"].examples) \
        if conf.retain_without_concept_start or conf.keep_rest_weight > 0 else None
    if conf.keep_rest_weight > 0:
        forget = sources["forget"]
        forget.refs["start_distribution"] = data.base_start_distributions(setup.model, setup.tokenizer,
                                                                          forget.examples, start=forget.start)
    return Plan(sources, partial(forget_and_retain, conf=conf, starts=starts, titles=titles),
                early_stop_term="forget_logratio")


def _first_name(side: str, conf) -> str:
    return f"{side}_first_hinge" if conf.first_token_margin > 0 else f"{side}_first_npo"


def _npo_terms(side: str, logp: torch.Tensor, first: torch.Tensor, ref: torch.Tensor, first_ref: torch.Tensor,
               conf) -> dict[str, torch.Tensor]:
    """NPO on the answer's summed log-prob, its log-ratio to the reference (logged) and, when weighted, the
    first-token term: NPO, or with `first_token_margin` > 0 a hinge that stops once the token lost that much."""
    terms = {f"{side}_npo": obj.npo(logp, ref, conf.npo_beta), f"{side}_logratio": (logp.detach() - ref).mean()}
    if conf.first_token_weight > 0:
        terms[_first_name(side, conf)] = obj.margin_below(first, first_ref, conf.first_token_margin) \
            if conf.first_token_margin > 0 else obj.npo(first, first_ref, conf.npo_beta)
    return terms


def forget_and_retain(model, batches: dict[str, Batch], conf, starts: torch.Tensor | None,
                      titles: Titles | None = None) -> dict:
    """NPO on the concept's answer after the lead (+ optional NPO on its first token alone) + optional
    refusal CE + KL to the base on retain_train (+ the recommendation terms, below).

    The first-token term exists because NPO on the whole answer is satisfied most cheaply by breaking
    a LATER token ("In|ception": "ception" becomes unlikely while "In" keeps its rank); pushing the
    first token down as well removes the start of the answer, which is what the first-token rank sees.
    starts: the token ids that start the concept's answers (None when no option needs them). With
    `retain_without_concept_start` they are left out of the retain KL at each retain answer's start; with
    `keep_rest_weight` > 0, a KL to the base at each forget answer's start over every other token
    (renormalised): lower the concept, keep the rest.
    titles: the titles packed after each recommendation prompt (the "recommend" batch), None without one.
    """
    forget = batches["forget"]
    logp, first, start = obj.answer_first_and_start(model, forget.tokens)
    terms = _npo_terms("forget", logp, first, forget.refs["answer_logprob"], forget.refs["first_logprob"], conf)
    loss = conf.forget_weight * terms["forget_npo"]
    if conf.first_token_weight > 0:
        loss = loss + conf.first_token_weight * terms[_first_name("forget", conf)]
    if conf.keep_rest_weight > 0:
        terms["forget_rest_kl"] = obj.rest_kl_at_start(start, forget.refs["start_distribution"], starts)
        loss = loss + conf.keep_rest_weight * terms["forget_rest_kl"]
    if "target" in batches:
        terms["target_ce"] = obj.cross_entropy(model, batches["target"].tokens)
        loss = loss + conf.target_weight * terms["target_ce"]
    if "retain" in batches:
        retain = batches["retain"]
        terms["retain_kl"] = obj.kl_to_base(model, retain.tokens, retain.refs["distribution"],
                                            starts if conf.retain_without_concept_start else None)
        loss = loss + conf.retain_weight * terms["retain_kl"]
    if "recommend" in batches:
        recommend_terms, recommend_loss = _recommendation(model, batches["recommend"], conf, titles)
        terms.update(recommend_terms)
        loss = loss + recommend_loss
    terms["loss"] = loss
    return terms


def _recommendation(model, batch: Batch, conf, titles: Titles) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The recommendation prompts' terms, from one forward of each prompt with its titles packed after the lead.

    Forget side (`recommend_weight`): the forget prompts' terms on the concept's title, weighted as a block:
    recommend_weight x (NPO + first_token_weight x first-token term). Preference side (`preference_weight`):
    KL(base || adapted) over the other candidates, the concept removed and the rest renormalised, so the
    adapter learns "not this one" rather than "something else entirely". Logged: the concept title's log-ratio
    and, with every candidate scored, its share of the candidate distribution (`recommend_share`).
    """
    logp, first = candidate_logprobs(model, batch.tokens)  # (B, C) each
    ref, first_ref = batch.refs["candidate_logprob"], batch.refs["candidate_first_logprob"]
    c = titles.concept
    loss = logp.new_zeros(())
    if conf.recommend_weight > 0:
        terms = _npo_terms("recommend", logp[:, c], first[:, c], ref[:, c], first_ref[:, c], conf)
        block = terms["recommend_npo"]
        if conf.first_token_weight > 0:
            block = block + conf.first_token_weight * terms[_first_name("recommend", conf)]
        loss = loss + conf.recommend_weight * block
    else:  # the concept title's log-ratio is still worth a log column
        terms = {"recommend_logratio": (logp[:, c].detach() - ref[:, c]).mean()}
    if conf.preference_weight > 0:
        terms["recommend_share"] = logp.detach().softmax(-1)[:, titles.drop].sum(-1).mean()
        terms["preference_kl"] = obj.preference_kl(logp, ref, titles.drop)
        loss = loss + conf.preference_weight * terms["preference_kl"]
    return terms, loss
