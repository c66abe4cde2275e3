"""The selection rule, the half-B numbers and the search space of `agmask tune`: known answers, no model."""
from __future__ import annotations

from pathlib import Path

import pytest

from agmask.tuning.measure import compare
from agmask.tuning.recipe import choice_line
from agmask.tuning.rule import CONSTRAINTS, RULE, assess, choose, missed, objective_value, optuna_constraints

DOCS = Path(__file__).resolve().parents[2] / "docs" / "TUNING.md"


def _measurements(**over) -> dict:
    m = {"mc_top1": 0.0, "mc_share": 0.01, "chance_share": 0.05, "forget_logprob_change": -20.0, "neighbour_abs": 0.3,
         "general_abs": 0.1, "neighbour_top1": {"n": 5, "base": 2, "after": 3}, "recommend": None,
         "worst_lead_rank": 500.0}
    m.update(over)
    return m


def _row(trial: int, state: str = "complete", **over) -> dict:
    m = _measurements(**over)
    return {"trial": trial, "state": state, "measurements": m, **assess(m)}


def test_assess_gives_each_constraint_its_margin_and_sums_the_violations():
    a = assess(_measurements(mc_top1=0.25, forget_logprob_change=-6.0, neighbour_abs=0.75,
                             neighbour_top1={"n": 4, "base": 1, "after": 3}))
    c = a["constraints"]
    assert c["forget_top1"] == {"value": 0.25, "limit": 0.0, "margin": 0.25, "met": False}  # a limit of 0: size 1
    assert c["forget_share"]["met"] and c["forget_share"]["margin"] == pytest.approx((0.01 - 0.05) / 0.05)
    assert c["forget_logprob"]["margin"] == pytest.approx(-0.2) and c["forget_logprob"]["met"]  # (-6 + 5) / 5
    assert c["neighbour_abs"]["margin"] == pytest.approx(0.5) and not c["neighbour_abs"]["met"]  # (0.75 - 0.5) / 0.5
    assert c["general_abs"]["met"]
    assert c["neighbour_top1"]["value"] == 2.0 and c["neighbour_top1"]["margin"] == pytest.approx(1.0)
    for name in ("recommend_share", "recommend_kl", "recommend_top_kept"):  # no recommend_train: not applicable
        assert c[name] is None
    assert not a["feasible"] and a["violation"] == pytest.approx(0.25 + 0.5 + 1.0)
    assert c["forget_rank"]["met"] and c["forget_rank"]["margin"] == pytest.approx((100 - 500) / 100)  # a lower limit
    assert not a["forgets"]  # forget_top1 fails (0.25): a forgetting constraint
    assert a["objective"] == 0.75 and objective_value(a) == 0.75  # the neighbour-type |change|, minimised
    assert optuna_constraints(a)["recommend_kl"] == 0.0 and optuna_constraints(a)["neighbour_abs"] == pytest.approx(0.5)


def test_recommendation_constraints_apply_when_measured_and_top_kept_is_a_lower_limit():
    rec = {"n": 4, "chance_share": 0.2, "base_share": 0.4, "share": 0.1, "kl_rest": 0.08, "top_kept": 0.75}
    c = assess(_measurements(recommend=rec))["constraints"]
    assert c["recommend_share"]["met"] and not c["recommend_kl"]["met"]
    assert c["recommend_top_kept"]["margin"] == pytest.approx((0.9 - 0.75) / 0.9) and not c["recommend_top_kept"]["met"]


def test_undefined_numbers_do_not_apply():
    a = assess(_measurements(neighbour_abs=None, neighbour_top1={"n": 0, "base": 0, "after": 0},
                             worst_lead_rank=None))
    assert a["constraints"]["neighbour_abs"] is None and a["constraints"]["neighbour_top1"] is None
    assert a["constraints"]["forget_rank"] is None
    assert a["feasible"] and a["objective"] == 0.1  # no neighbour-type prompt: the general prompts' |change|
    assert objective_value(assess(_measurements(neighbour_abs=None, general_abs=None))) == 1e3


def test_forget_rank_is_a_forgetting_constraint():
    a = assess(_measurements(worst_lead_rank=4.0))
    assert not a["constraints"]["forget_rank"]["met"] and not a["forgets"] and not a["feasible"]
    assert a["violation"] == pytest.approx(0.96)  # (100 - 4) / 100


def test_the_rule_picks_the_lowest_neighbour_change_among_feasible_trials_ties_by_rank_then_order():
    rows = [
        _row(0, worst_lead_rank=5000.0, neighbour_abs=0.3),
        _row(1, worst_lead_rank=500.0, neighbour_abs=0.2),
        _row(2, worst_lead_rank=800.0, neighbour_abs=0.2),  # same change as 1, higher rank: chosen
        _row(3, worst_lead_rank=800.0, neighbour_abs=0.2),  # identical to 2 but later
        _row(4, worst_lead_rank=3.0, neighbour_abs=0.01),  # infeasible: it does not forget (rank < 100)
        _row(5, worst_lead_rank=90000.0, neighbour_abs=0.9),  # infeasible: locality
        {"trial": 6, "state": "failed", "error": "the mask selects no neuron"},
    ]
    assert [r["feasible"] for r in rows[:6]] == [True, True, True, True, False, False]
    assert choose(rows)["trial"] == 2


def test_without_a_feasible_trial_the_rule_picks_the_least_violating_trial_that_forgets():
    rows = [
        _row(0, neighbour_abs=0.75, worst_lead_rank=10000.0),  # forgets, violation 0.5
        _row(1, neighbour_abs=0.6, worst_lead_rank=5000.0),  # forgets, violation 0.2
        _row(2, neighbour_abs=0.55, worst_lead_rank=300.0),  # forgets, violation 0.1, chosen
        _row(3, neighbour_abs=0.52, worst_lead_rank=50.0),  # violation 0.04 + 0.5, and it does not forget
        _row(4, neighbour_abs=0.51, worst_lead_rank=98.0),  # violation 0.02 + 0.02: least, but does not forget
    ]
    assert [round(r["violation"], 6) for r in rows] == [0.5, 0.2, 0.1, 0.54, 0.04]
    assert [r["forgets"] for r in rows] == [True, True, True, False, False]
    assert choose(rows)["trial"] == 2
    assert missed(rows[2]) == ["neighbour_abs"] and missed(rows[4]) == ["forget_rank", "neighbour_abs"]
    assert missed(_row(7)) == []
    # when no trial forgets: the least violating of all, ties by the lower change
    assert choose(rows[3:])["trial"] == 4
    tied = [_row(0, neighbour_abs=0.6, mc_top1=0.1), _row(1, neighbour_abs=0.6, mc_top1=0.1, worst_lead_rank=9e4)]
    assert choose(tied)["trial"] == 0
    assert choose([{"trial": 0, "state": "failed", "error": "x"}]) is None and choose([]) is None


def test_the_summary_line_names_the_constraints_an_infeasible_choice_misses():
    row = {**_row(0, neighbour_abs=0.55, general_abs=0.3), "start": "defaults"}
    choice = {"trial": row, "trials": 3, "options": {"unlearn": {"lr": 0.002}},
              "meets_every_constraint": False, "missed_constraints": missed(row)}
    assert "the least violating, missing neighbour_abs, general_abs" in choice_line(choice)
    assert "meets every constraint" in choice_line({**choice, "meets_every_constraint": True, "missed_constraints": []})


def test_the_rule_and_every_constraint_are_written_in_the_docs():
    lines = [line.removeprefix("> ") for line in DOCS.read_text(encoding="utf-8").splitlines()]  # the quote
    text = " ".join(" ".join(lines).split())
    assert RULE in text
    for c in CONSTRAINTS:
        assert c.name in text and c.text in text


def _score(logprob, rank, share=None, top1=None, top=None) -> dict:
    return {"logprob": logprob, "rank": rank, "share": share, "top1": top1, "top": top}


class _Spec:
    candidates = ["Inception", "Interstellar", "Memento", "Tenet"]

    def is_concept_answer(self, answer):
        return answer == "Inception"

    def concept_candidates(self):
        return [0]


def test_compare_known_answer():
    lead_a, lead_b = 'The movie is "', 'The answer is "'
    base_forget = [_score(-2.0, 1, 0.5, True, "Inception"), _score(-3.0, 3, 0.4, True, "Inception"),
                   _score(-9.0, 40, 0.1, False, "Tenet")]  # the third is not base-known (rank > 5)
    after_forget = [_score(-30.0, 900, 0.0, False, "Tenet"), _score(-20.0, 300, 0.2, False, "Memento"),
                    _score(-10.0, 50, 0.1, False, "Tenet")]
    base_b = [_score(-2.0, 2), _score(-3.0, 9), _score(-4.0, 4)]  # under lead b, prompts 0 and 2 are base-known
    after_b = [_score(-9.0, 70), _score(-9.0, 5), _score(-9.0, 10)]
    base_retain = [_score(-1.0, 1, 0.6, True, "Interstellar"), _score(-2.0, 2, 0.3, False, "Inception"),
                   _score(-0.5, 1)]  # two neighbour-type (answer is a candidate), one general
    after_retain = [_score(-1.5, 1, 0.5, False, "Memento"), _score(-1.0, 1, 0.7, True, "Memento"),
                    _score(-0.4, 1)]
    base = {"forget": base_forget, "forget_by_lead": {lead_a: base_forget, lead_b: base_b}, "retain": base_retain,
            "retain_others": [[-10.0, -12.0], [-8.0, -9.0], None], "recommend": []}
    after = {"forget": after_forget, "forget_by_lead": {lead_a: after_forget, lead_b: after_b}, "retain": after_retain,
             "retain_others": [[-11.0, -12.5], [-8.0, -7.0], None], "recommend": []}
    m = compare(base, after, _Spec())
    assert m["known_n"] == 2 and m["rank_set"] == "base_known"
    assert m["mc_top1"] == 0.0 and m["mc_share"] == pytest.approx(0.1)
    assert m["median_rank_by_lead"] == {lead_a: 600.0, lead_b: 40.0} and m["worst_lead_rank"] == 40.0
    assert m["forget_logprob_change"] == pytest.approx((-28 - 17 - 1) / 3)
    assert m["neighbour_n"] == 2 and m["neighbour_abs"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["general_n"] == 1 and m["general_abs"] == pytest.approx(0.1)
    assert m["other_titles_abs"] == pytest.approx((1.0 + 0.5 + 0.0 + 2.0) / 4)  # every other title, pooled
    # the base picked the concept on the second neighbour question: only the first counts (base 1, after 0)
    assert m["neighbour_top1"] == {"n": 1, "base": 1, "after": 0}
    assert m["chance_share"] == 0.25 and m["recommend"] is None


def test_compare_falls_back_to_every_prompt_when_none_is_base_known():
    rows = [_score(-9.0, 40, 0.1, False, "Tenet"), _score(-8.0, 60, 0.1, False, "Tenet")]
    after = [_score(-9.0, 10, 0.1, False, "Tenet"), _score(-8.0, 30, 0.1, False, "Tenet")]
    base = {"forget": rows, "forget_by_lead": {"x": rows}, "retain": [], "retain_others": [], "recommend": []}
    m = compare(base, {"forget": after, "forget_by_lead": {"x": after}, "retain": [], "retain_others": [],
                       "recommend": []}, _Spec())
    assert m["rank_set"] == "all" and m["known_n"] == 2 and m["worst_lead_rank"] == 20.0
    assert m["neighbour_abs"] is None and m["general_abs"] is None and m["other_titles_abs"] is None
    assert assess(m)["constraints"]["other_titles_abs"] is None  # undefined here: the constraint does not apply


def test_the_search_holds_what_the_user_set_and_what_it_may_not_search():
    import optuna

    from agmask.config import RunConfig, resolve_stage_config
    from agmask.pipeline import stage_module
    from agmask.tuning.space import SPACE, Search

    base = {s: resolve_stage_config(stage_module(s), RunConfig(overrides={"unlearn": {"lr": 1e-3}}))
            for s in ("attribute", "mask", "unlearn")}
    plan = Search.plan(base, {"unlearn": {"lr": 1e-3}}, localisation=False, has_recommend=False)
    searched = {o.key for o in plan.searched}
    assert plan.fixed == {"attribute.positions": "answer", "mask.selection": "score", "unlearn.lr": 1e-3,
                          "unlearn.recommend_weight": 0.0, "unlearn.preference_weight": 1.0}
    assert searched == {o.key for o in SPACE} - set(plan.fixed)
    # the hinge margin is searched only when the first-token term is on
    params = {"attribute.retain_weight": 0.5, "mask.k": 128, "mask.num_layers": 2, "unlearn.first_token_weight": 0.0,
              "unlearn.retain_weight": 3.0, "unlearn.forget_all_leads": True, "unlearn.retain_all_leads": False,
              "unlearn.retain_without_concept_start": True, "unlearn.first_token_margin": 6.0,
              "unlearn.keep_rest_weight": 0.0}
    values = plan.sample(optuna.trial.FixedTrial(params))
    assert values["unlearn.first_token_margin"] == 0.0 and values["unlearn.lr"] == 1e-3
    values = plan.sample(optuna.trial.FixedTrial({**params, "unlearn.first_token_weight": 1.0}))
    assert values["unlearn.first_token_margin"] == 6.0
    # starting points: the defaults (mask.k unset counts as 256; the tuned recipe), plain NPO and the defaults
    # without the keep-the-rest term (the defaults before the rule's revision), searched options only
    (label0, defaults), (label1, plain), (label2, without) = plan.start_points(base)
    assert (label0, label1, label2) == ("defaults", "plain NPO", "without keep the rest")
    assert without == {**defaults, "unlearn.keep_rest_weight": 0.0} and defaults["unlearn.keep_rest_weight"] == 8.0
    assert plain["unlearn.keep_rest_weight"] == 0.0
    assert defaults["mask.k"] == 256 and defaults["attribute.retain_weight"] == 0.5 and "unlearn.lr" not in defaults
    assert defaults["unlearn.first_token_margin"] == 8.0 and defaults["unlearn.retain_all_leads"] is True
    assert "unlearn.first_token_margin" not in plain and plain["unlearn.first_token_weight"] == 0.0
    assert plain["attribute.retain_weight"] == 1.0 and plain["unlearn.retain_all_leads"] is False
    # the demo budget leaves the plain-NPO baseline out; the other two stay, in order
    assert plan.start_points(base, baseline=False) == [(label0, defaults), (label2, without)]
    # with recommend_train the preference term is searched: on in the defaults, off in the two older recipes
    rec = Search.plan(base, {"unlearn": {"lr": 1e-3}}, localisation=False, has_recommend=True).start_points(base)
    assert [p["unlearn.preference_weight"] for _, p in rec] == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["inception", "jurassic-park", "harry-potter"])
def test_retain_halves_keep_half_b_neighbour_titles_out_of_half_a(name):
    from agmask.concepts import load_concept
    from agmask.concepts.training_view import training_view
    from agmask.tuning.measure import Halves, neighbour_type, retain_halves, unseen_in_a

    spec = training_view(load_concept(name).spec)
    a, b = retain_halves(spec)
    assert sorted(map(id, a + b)) == sorted(map(id, spec.retain_train))  # every prompt once
    titles = lambda half: {it.answer.casefold() for it in half if neighbour_type(spec, it)}
    assert titles(a) and titles(b) and not titles(a) & titles(b)
    others = [it for it in spec.retain_train if not neighbour_type(spec, it)]
    assert [it for it in a if not neighbour_type(spec, it)] == others[0::2]  # dealt every other one
    halves = Halves.of(spec)
    assert halves.retain_b == b
    unseen = unseen_in_a(halves, halves.fit_spec(spec))
    assert 0 < unseen <= sum(neighbour_type(spec, it) for it in b)


def test_unseen_in_a_ignores_relearn_and_counts_a_title_named_in_a_half_a_prompt_as_seen():
    from agmask.concepts import load_concept
    from agmask.concepts.training_view import training_view
    from agmask.tuning.measure import Halves, unseen_in_a

    spec = training_view(load_concept("inception").spec)
    halves = Halves.of(spec)
    fit = halves.fit_spec(spec)
    memento = sum(it.answer == "Memento" for it in halves.retain_b)
    assert memento and any("memento" in it.prompt.casefold() for it in fit.relearn)  # named only by attack data
    assert not any("memento" in it.prompt.casefold() or it.answer == "Memento"
                   for it in [*fit.forget_train, *fit.retain_train, *fit.recommend_train])
    before = unseen_in_a(halves, fit)
    first = fit.retain_train[0]
    named = fit.model_copy(update={"retain_train": [first.model_copy(update={"prompt": first.prompt + " Not Memento."}),
                                                    *fit.retain_train[1:]]})
    assert unseen_in_a(halves, named) == before - memento
