"""What a trial is judged by: forgetting and locality on half B of the training sets (never an evaluation set).

`measure` scores a model on half B: the forget prompts under each answer lead the training sets use
(`The movie is "`, `The answer is "`, ...), the retain prompts, and the recommendation prompts' candidate
log-probs when the concept has `recommend_train`. `compare` turns a base and an adapted measurement into
the numbers the selection rule reads (`agmask.tuning.rule`):

- forgetting on the base-known forget prompts (base first-token rank <= 5 under that lead; all prompts when
  none is base-known, flagged by `rank_set`): MC top-1 rate and share under each prompt's own lead, median
  first-token rank under each training lead and its worst (lowest) lead, mean answer log-prob change;
- locality: mean |change| of the answer log-prob on neighbour-type retain prompts (the answer is a candidate
  title) and on the general ones; on the neighbour-type prompts, the mean |change| of every other candidate
  title's log-prob (`other_titles`: the titles the model does not give there); the neighbour-type MC top-1
  count on the prompts the base did not answer with the concept, before and after;
- recommendations (half B of `recommend_train`): the concept's candidate share, KL over the other candidates
  (concept removed, renormalised), the share of prompts whose top remaining title is unchanged.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

from agmask.concepts import training_halves
from agmask.concepts.schema import PromptItem
from agmask.evaluate.metrics_recommend import preference_stats
from agmask.scoring import BASE_KNOWN_RANK, candidate_logprobs, score_item_and_candidates, score_items
from agmask.unlearn.data import training_leads


@dataclass(frozen=True)
class Halves:
    """The training sets split in two (`concepts.training_halves`; `retain_train` by answer, `retain_halves`):
    A fits, B judges."""

    forget_a: list[PromptItem]
    forget_b: list[PromptItem]
    retain_a: list[PromptItem]
    retain_b: list[PromptItem]
    recommend_a: list[PromptItem]
    recommend_b: list[PromptItem]
    leads: list[str]  # every answer lead the training sets use, forget_train's first

    @classmethod
    def of(cls, spec) -> "Halves":
        """`spec` is a training view: an evaluation set read here is an error."""
        forget_a, forget_b = training_halves(spec.forget_train)
        retain_a, retain_b = retain_halves(spec)
        recommend_a, recommend_b = training_halves(spec.recommend_train)
        return cls(forget_a, forget_b, retain_a, retain_b, recommend_a, recommend_b,
                   training_leads(spec, spec.forget_train, spec.retain_train))

    def fit_spec(self, spec):
        """The view training and attribution read: half A of every training set."""
        return spec.model_copy(update={"forget_train": self.forget_a, "retain_train": self.retain_a,
                                       "recommend_train": self.recommend_a})


def neighbour_type(spec, item: PromptItem) -> bool:
    """A retain prompt whose answer is one of the concept's candidates (it has a multiple-choice view, as
    `scoring` gives it) and not the concept itself."""
    answer = item.answer or ""
    return answer.casefold() in {c.casefold() for c in spec.candidates} and not spec.is_concept_answer(answer)


def retain_halves(spec) -> tuple[list[PromptItem], list[PromptItem]]:
    """`retain_train` in two, so that half B's neighbour-type prompts ask about titles half A never answers.

    Neighbour-type prompts are grouped by answer and the groups dealt alternately, in order of first
    appearance, to A and B; the other prompts are dealt every other one. Half B's neighbour locality is then
    the locality on answers the fit never anchored, whatever order a concept file lists its prompts in
    (dealing prompt by prompt, as `concepts.training_halves` does, gives the same halves for inception and
    jurassic-park, whose files list each title's prompts apart, but put all 9 of harry-potter's half-B titles
    in half A too)."""
    group_of: dict[str, int] = {}
    a, b, others = [], [], 0
    for item in spec.retain_train:
        if neighbour_type(spec, item):
            to_a = group_of.setdefault(" ".join(item.answer.casefold().split()), len(group_of)) % 2 == 0
        else:
            to_a, others = others % 2 == 0, others + 1
        (a if to_a else b).append(item)
    return a, b


def unseen_in_a(halves: "Halves", fit_spec) -> int:
    """How many of half B's neighbour-type retain prompts have an answer that appears in none of the sets a trial
    trains on (half A of forget_train, retain_train, recommend_train; `relearn` is attack data, not trained on)."""
    trained = fit_spec.model_copy(update={"relearn": []})
    return sum(1 for item in halves.retain_b
               if neighbour_type(fit_spec, item) and trained.training_appearance(item.answer) is None)


def _row(score) -> dict:
    return {"logprob": score.answer_logprob, "rank": score.first_token_rank, "share": score.mc_share,
            "top1": score.mc_top1, "top": score.mc_top}


def other_titles(spec, item: PromptItem, candidate_lps: list[float] | None) -> list[float] | None:
    """A retain prompt's log-probs of every candidate title that is neither its answer nor the concept, from its
    `candidate_logprobs` (None for a prompt that is not neighbour-type). Titles the model does not give there,
    as the base does not give the evaluation's unseen neighbour answers (their base log-prob is below -5 nats
    on inception and jurassic-park): how much an adapter pushes those around is what the answers alone do not
    show."""
    if not neighbour_type(spec, item):
        return None
    own = item.answer.casefold()
    return [lp for title, lp in zip(spec.candidates, candidate_lps)
            if title.casefold() != own and not spec.is_concept_answer(title)]


def measure(model, tokenizer, spec, halves: Halves) -> dict:
    """Half-B rows of `model` (JSON-ready): `forget` (own leads), `forget_by_lead`, `retain`, `retain_others`
    (`other_titles`, from the same forward as the retain rows), `recommend`."""
    def rows(set_name: str, items: list[PromptItem]) -> list[dict]:
        return [_row(s) for s in score_items(model, tokenizer, spec, set_name, items)]

    by_lead = {lead: rows("forget_train", [it.model_copy(update={"lead": lead}) for it in halves.forget_b])
               for lead in halves.leads}
    own = {spec.lead_for("forget_train", it) for it in halves.forget_b}
    forget = by_lead[next(iter(own))] if len(own) == 1 and next(iter(own)) in by_lead else \
        rows("forget_train", halves.forget_b)
    recommend = [candidate_logprobs(model, tokenizer, spec, "recommend_train", it) for it in halves.recommend_b]
    retain = [score_item_and_candidates(model, tokenizer, spec, "retain_train", i, it)
              for i, it in enumerate(halves.retain_b)]
    return {"forget": forget, "forget_by_lead": by_lead, "retain": [_row(score) for score, _ in retain],
            "retain_others": [other_titles(spec, it, lps) for it, (_, lps) in zip(halves.retain_b, retain)],
            "recommend": recommend}


def _mean(values) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def _known(base_rows: list[dict]) -> tuple[list[int], str]:
    """Indices of the base-known prompts, or of every prompt when none is (and which it is)."""
    known = [i for i, r in enumerate(base_rows) if r["rank"] <= BASE_KNOWN_RANK]
    return (known, "base_known") if known else (list(range(len(base_rows))), "all")


def compare(base: dict, after: dict, spec) -> dict:
    """The half-B numbers of an adapted model against the base (see the module docstring)."""
    known, rank_set = _known(base["forget"])
    fa = [after["forget"][i] for i in known]
    ranks = {}
    for lead, base_rows in base["forget_by_lead"].items():
        idx, _ = _known(base_rows)
        ranks[lead] = statistics.median(after["forget_by_lead"][lead][i]["rank"] for i in idx) if idx else None
    defined = [r for r in ranks.values() if r is not None]
    delta = [a["logprob"] - b["logprob"] for a, b in zip(after["retain"], base["retain"])]
    neighbour = [i for i, r in enumerate(base["retain"]) if r["share"] is not None]
    general = [i for i, r in enumerate(base["retain"]) if r["share"] is None]
    other_pick = [i for i in neighbour if not spec.is_concept_answer(base["retain"][i]["top"] or "")]
    out = {
        "known_n": len(known), "rank_set": rank_set,
        "mc_top1": _mean(float(r["top1"]) for r in fa if r["top1"] is not None),
        "mc_share": _mean(r["share"] for r in fa if r["share"] is not None),
        "chance_share": 1 / len(spec.candidates),
        "median_rank_by_lead": ranks,
        "worst_lead_rank": min(defined) if defined else None,
        "forget_logprob_change": _mean(a["logprob"] - b["logprob"] for a, b in zip(after["forget"], base["forget"])),
        "neighbour_n": len(neighbour), "neighbour_abs": _mean(abs(delta[i]) for i in neighbour),
        "general_n": len(general), "general_abs": _mean(abs(delta[i]) for i in general),
        "other_titles_abs": _mean(abs(a - b) for i in neighbour
                                  for b, a in zip(base["retain_others"][i] or [], after["retain_others"][i] or [])),
        "neighbour_top1": {"n": len(other_pick), "base": sum(bool(base["retain"][i]["top1"]) for i in other_pick),
                           "after": sum(bool(after["retain"][i]["top1"]) for i in other_pick)},
        "recommend": None,
    }
    pairs = [(b, a) for b, a in zip(base["recommend"], after["recommend"]) if b is not None and a is not None]
    if pairs and spec.concept_candidates():
        stats = preference_stats(torch.tensor([b for b, _ in pairs], dtype=torch.float64),
                                 torch.tensor([a for _, a in pairs], dtype=torch.float64),
                                 list(spec.candidates), spec.concept_candidates())
        out["recommend"] = {"n": stats["n"], "chance_share": stats["chance_share"],
                            "base_share": stats["base"]["concept_share"], "share": stats["adapted"]["concept_share"],
                            "kl_rest": stats["kl_remaining_mean"], "top_kept": stats["top_remaining_unchanged"]}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
