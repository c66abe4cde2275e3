"""The selection rule of `agmask tune`, in words (`RULE`, quoted in docs/TUNING.md and tune/choice.json) and in code.

Every constraint reads one half-B number of `agmask.tuning.measure.compare`; its limit is the issue's target
for the held-out sets, applied to the training halves. A constraint whose number is undefined for this
concept (no neighbour-type retain prompt, no `recommend_train`) does not apply.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

RULE = ("A trial forgets when it meets every forgetting constraint on half B (forget_top1, forget_share, "
        "forget_logprob, forget_rank). Among the completed trials that meet every applicable constraint, the one with "
        "the lowest neighbour-type |change| (the general prompts' |change| when half B has no neighbour-type prompt; "
        "ties: the higher worst-lead median first-token rank, then the earlier trial). If no trial meets them all, the "
        "least violating of the trials that forget (of every trial when none forgets): the lowest sum over the "
        "constraints of the shortfall divided by the size of the limit (|limit|, or 1 for a limit of 0); ties: the "
        "lower |change|, then the earlier trial.")
# Version 1 (until 2026-12-02) took the highest worst-lead rank among the feasible trials and the least violating
# trial of all otherwise: docs/TUNING.md, "The rule's revision". Part of the study's name, so that a search is
# never resumed under another rule.
RULE_VERSION = 2
FORGETTING = ("forget_top1", "forget_share", "forget_logprob", "forget_rank")


@dataclass(frozen=True)
class Constraint:
    name: str
    text: str  # as docs/TUNING.md lists it
    value: Callable[[dict], float | None]  # the measured number (None: the constraint does not apply)
    limit: Callable[[dict], float]
    upper: bool = True  # value <= limit; False: value >= limit

    def margin(self, m: dict) -> float | None:
        """(value - limit) / size of the limit, signed so that <= 0 is met; None when it does not apply."""
        value = self.value(m)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        limit = self.limit(m)
        scale = abs(limit) or 1.0
        return (value - limit) / scale if self.upper else (limit - value) / scale


def _recommend(key: str) -> Callable[[dict], float | None]:
    return lambda m: m["recommend"][key] if m.get("recommend") else None


CONSTRAINTS = (
    Constraint("forget_top1", "MC top-1 rate 0 on the base-known half-B forget prompts",
               lambda m: m["mc_top1"], lambda m: 0.0),
    Constraint("forget_share", "their mean MC share at or below chance (1 / number of candidates)",
               lambda m: m["mc_share"], lambda m: m["chance_share"]),
    Constraint("forget_logprob", "mean answer log-prob change of the half-B forget prompts <= -5 nats",
               lambda m: m["forget_logprob_change"], lambda m: -5.0),
    Constraint("forget_rank", "worst-lead median first-token rank of the base-known half-B forget prompts >= 100",
               lambda m: m.get("worst_lead_rank"), lambda m: 100.0, upper=False),
    Constraint("neighbour_abs", "neighbour-type retain prompts: mean |change| of the answer log-prob <= 0.5 nats",
               lambda m: m["neighbour_abs"], lambda m: 0.5),
    Constraint("other_titles_abs", "neighbour-type retain prompts: mean |change| of the log-prob of every other "
               "candidate title (neither the answer nor the concept) <= 0.5 nats",
               lambda m: m.get("other_titles_abs"), lambda m: 0.5),
    Constraint("general_abs", "general retain prompts: mean |change| of the answer log-prob <= 0.2 nats",
               lambda m: m["general_abs"], lambda m: 0.2),
    Constraint("neighbour_top1", "neighbour-type MC top-1 count within 1 of the base's, on the prompts the base "
               "did not answer with the concept",
               lambda m: float(abs(m["neighbour_top1"]["after"] - m["neighbour_top1"]["base"]))
               if m["neighbour_top1"]["n"] else None, lambda m: 1.0),
    Constraint("recommend_share", "recommend_train half B: the concept's candidate share at or below chance",
               _recommend("share"), lambda m: m["recommend"]["chance_share"]),
    Constraint("recommend_kl", "recommend_train half B: KL over the other candidates <= 0.05",
               _recommend("kl_rest"), lambda m: 0.05),
    Constraint("recommend_top_kept", "recommend_train half B: top remaining title unchanged on >= 90% of the prompts",
               _recommend("top_kept"), lambda m: 0.9, upper=False),
)


def locality(measurements: dict) -> float | None:
    """What the rule and the sampler minimise: the neighbour-type |change| (the general prompts' when half B has
    no neighbour-type prompt); None when neither is measured."""
    value = measurements.get("neighbour_abs")
    return value if value is not None else measurements.get("general_abs")


def assess(measurements: dict) -> dict:
    """Each constraint's value, limit, margin and status; whether all applicable ones are met and whether the
    forgetting ones are; the violation (sum of the positive margins) and the objective (`locality`)."""
    status = {}
    for c in CONSTRAINTS:
        margin = c.margin(measurements)
        status[c.name] = None if margin is None else {
            "value": c.value(measurements), "limit": c.limit(measurements), "margin": margin, "met": margin <= 0}
    applicable = [s for s in status.values() if s is not None]
    return {"constraints": status, "feasible": all(s["met"] for s in applicable),
            "forgets": all(status[name]["met"] for name in FORGETTING if status[name] is not None),
            "violation": sum(max(0.0, s["margin"]) for s in applicable),
            "objective": locality(measurements)}


def missed(assessment: dict) -> list[str]:
    """The constraints an assessed trial does not meet, in `CONSTRAINTS` order (empty when it is feasible)."""
    return [name for name, s in assessment["constraints"].items() if s is not None and not s["met"]]


def optuna_constraints(assessment: dict) -> dict[str, float]:
    """One value per constraint, <= 0 when met (0 when it does not apply): Optuna's constrained-TPE input."""
    return {name: 0.0 if s is None else float(s["margin"]) for name, s in assessment["constraints"].items()}


def objective_value(assessment: dict) -> float:
    """What the sampler minimises: `locality` (a large 1e3 when undefined, so that such a trial never looks good)."""
    value = assessment["objective"]
    return float(value) if value is not None else 1e3


def choose(rows: list[dict]) -> dict | None:
    """The trial `RULE` picks among trial rows (`state`, `trial`, `feasible`, `forgets`, `violation`,
    `measurements`); None when no trial completed."""
    done = [r for r in rows if r.get("state") == "complete"]
    if not done:
        return None
    rank = lambda r: r["measurements"].get("worst_lead_rank") or float("-inf")
    feasible = [r for r in done if r["feasible"]]
    if feasible:
        return min(feasible, key=lambda r: (objective_value(r), -rank(r), r["trial"]))
    forgetting = [r for r in done if r["forgets"]] or done
    return min(forgetting, key=lambda r: (r["violation"], objective_value(r), r["trial"]))
