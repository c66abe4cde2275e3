"""The targets (agmask.targets) on hand-made metrics dicts: met, not met, not measured, and the edges."""
from __future__ import annotations

import pytest

from agmask.evaluate import METRICS
from agmask.targets import MET, NOT_MEASURED, NOT_MET, TARGETS, Target, evaluate_target, evaluate_targets, \
    targets_count, targets_line

BY_NAME = {t.name: t for t in TARGETS}


def side(**values) -> dict:
    return {"n": 4, **values}


def good_metrics() -> dict:
    """Every target met: the numbers an adapter that forgets and keeps everything else would give."""
    relearn = {"base_known": {"base": {"mc_top1_count": 10}, "unlearned": {"mc_top1_count": 0},
                              "attacked": {"mc_top1_count": 2}}}
    return {
        "forget_base_known": {"kind": "forget", "chance_share": 0.0625,
                              "base": side(mc_top1_rate=0.8, mc_share=0.5, median_first_token_rank=1),
                              "adapted": side(mc_top1_rate=0.0, mc_share=0.01, median_first_token_rank=4000)},
        "forget_efficacy": {"kind": "forget", "base": side(mean_answer_logprob=-2.0),
                            "adapted": side(mean_answer_logprob=-9.0)},
        "locality": {"kind": "locality", "anchored": side(mean_abs_delta_answer_logprob=0.2),
                     "unseen": side(mean_abs_delta_answer_logprob=0.4),
                     "mc_top1_count_base_not_concept": {"n": 10, "base": 7, "adapted": 6}},
        "kl_greedy": {"kind": "utility", "sets": {"retain_eval": {"mean_kl_per_token": 0.01}}},
        "fluency": {"kind": "fluency", "overall": {"base": side(repetition_rate=0.1), "adapted": side(repetition_rate=0.12)}},
        "recommendation_rate": {"kind": "forget", "base": {"rate": 0.4}, "adapted": {"rate": 0.0}},
        "recommendation_preference": {"kind": "locality", "chance_share": 0.05, "kl_remaining_mean": 0.02,
                                      "top_remaining_unchanged": 0.95, "base": {"concept_share": 0.41,
                                                                               "distinct_top_remaining": 10},
                                      "adapted": {"concept_share": 0.01, "distinct_top_remaining": 9}},
        "attack_relearn_full": {"kind": "attack", "variants": {"relearn k=20": relearn}},
    }


def statuses(metrics: dict) -> dict[str, str]:
    return {r.target.name: r.status for r in evaluate_targets(metrics)}


def test_every_target_met_on_good_numbers():
    results = evaluate_targets(good_metrics())
    assert [r.target.name for r in results] == [t.name for t in TARGETS] and len(results) == 15
    assert all(r.status == MET for r in results), [(r.target.name, r.why) for r in results if not r.met]
    assert targets_line(results) == "targets met 15/15: " + ", ".join(t.name for t in TARGETS)
    assert targets_count(results) == "targets: 15 met, 0 not met, 0 not measured (of 15)"


def test_nothing_is_met_on_an_empty_dict():
    results = evaluate_targets({})
    assert {r.status for r in results} == {NOT_MEASURED}
    assert results[0].why == "metric forget_base_known was not run"
    assert targets_line(results).startswith("targets met 0/15: none; not measured: forget.mc_top1, ")


@pytest.mark.parametrize("name, path, value, status", [
    ("forget.mc_top1", ("forget_base_known", "adapted", "mc_top1_rate"), 0.25, NOT_MET),
    ("forget.mc_share", ("forget_base_known", "adapted", "mc_share"), 0.0625, MET),  # equal to chance: met
    ("forget.mc_share", ("forget_base_known", "adapted", "mc_share"), 0.07, NOT_MET),
    ("forget.first_token_rank", ("forget_base_known", "adapted", "median_first_token_rank"), 100, NOT_MET),  # > 100
    ("forget.first_token_rank", ("forget_base_known", "adapted", "median_first_token_rank"), 101, MET),
    ("forget.answer_logprob", ("forget_efficacy", "adapted", "mean_answer_logprob"), -7.0, MET),  # exactly 5 down
    ("forget.answer_logprob", ("forget_efficacy", "adapted", "mean_answer_logprob"), -6.9, NOT_MET),
    ("locality.unseen", ("locality", "unseen", "mean_abs_delta_answer_logprob"), 0.5, MET),
    ("locality.unseen", ("locality", "unseen", "mean_abs_delta_answer_logprob"), 0.51, NOT_MET),
    ("locality.mc_top1", ("locality", "mc_top1_count_base_not_concept", "adapted"), 8, MET),  # base 7: 8 is within 1
    ("locality.mc_top1", ("locality", "mc_top1_count_base_not_concept", "adapted"), 5, NOT_MET),
    ("utility.retain_kl", ("kl_greedy", "sets", "retain_eval", "mean_kl_per_token"), 0.05, MET),
    ("fluency.repetition", ("fluency", "overall", "adapted", "repetition_rate"), 0.16, NOT_MET),  # base 0.1 + 0.05
    ("recommend.rate", ("recommendation_rate", "adapted", "rate"), 0.05, NOT_MET),
    ("recommend.top_kept", ("recommendation_preference", "top_remaining_unchanged"), 0.9, MET),
    ("recommend.distinct", ("recommendation_preference", "adapted", "distinct_top_remaining"), 11, MET),  # 10 +- 1
    ("recommend.distinct", ("recommendation_preference", "adapted", "distinct_top_remaining"), 8, NOT_MET),
    ("attack.relearn_20", ("attack_relearn_full", "variants", "relearn k=20", "base_known", "attacked",
                           "mc_top1_count"), 3, NOT_MET),  # base 10: at most 2
])
def test_one_value_moved_across_its_threshold(name, path, value, status):
    metrics = good_metrics()
    leaf = metrics
    for key in path[:-1]:
        leaf = leaf[key]
    leaf[path[-1]] = value
    result = evaluate_target(BY_NAME[name], metrics)
    assert (result.status, result.value) == (status, value)
    assert all(s == MET for n, s in statuses(metrics).items() if n != name)  # the others do not move


def test_the_bound_and_the_rule_in_words():
    metrics = good_metrics()
    known = {"forget.answer_logprob": (-7.0, "<= base - 5"), "fluency.repetition": (0.15, "<= base + 0.05"),
             "forget.mc_share": (0.0625, "<= chance_share"), "recommend.distinct": (1.0, "within 10% of base"),
             "attack.relearn_20": (2.0, "<= 0.2 x base"), "locality.mc_top1": (1.0, "within 1 of base"),
             "forget.first_token_rank": (100.0, "> 100")}
    for name, (bound, rule) in known.items():
        result = evaluate_target(BY_NAME[name], metrics)
        assert result.bound == pytest.approx(bound) and BY_NAME[name].rule == rule


def test_not_measured_says_why():
    metrics = good_metrics()
    metrics["recommendation_preference"] = {"kind": "locality", "skipped": "concept x has no recommend_eval set"}
    metrics["locality"]["anchored"] = {"set": "neighbors", "n": 0}
    metrics["attack_relearn_full"]["variants"] = {"relearn k=10": {}}  # the demo's checkpoint only
    del metrics["kl_greedy"]
    metrics["fluency"]["overall"]["base"]["repetition_rate"] = None  # a relative bound without its base
    results = {r.target.name: r for r in evaluate_targets(metrics)}
    assert results["recommend.share"].why == ("recommendation_preference skipped: concept x has no recommend_eval set "
                                              "(needs recommend_eval prompts in the concept)")
    assert results["locality.anchored"].why == "locality.anchored has no prompt (n = 0)"
    assert results["attack.relearn_20"].why == ("attack_relearn_full.variants has no relearn k=20 "
                                                "(needs 20 in evaluate.full_relearn_steps)")
    assert results["utility.retain_kl"].why.startswith("metric kl_greedy was not run")
    assert results["fluency.repetition"].status == NOT_MEASURED and results["fluency.repetition"].value == 0.12
    assert results["recommend.rate"].status == MET  # the other recommendation metric still counts
    assert sum(r.status == NOT_MEASURED for r in results.values()) == 4 + 4  # 4 recommendation_preference targets
    line = targets_line(list(results.values()))
    assert line.startswith("targets met 7/15: ") and "; not measured: locality.anchored, " in line


def test_a_non_number_is_not_measured_and_bad_declarations_are_refused():
    metrics = good_metrics()
    metrics["locality"]["unseen"]["mean_abs_delta_answer_logprob"] = True  # a flag is not a value
    assert evaluate_target(BY_NAME["locality.unseen"], metrics).status == NOT_MEASURED
    with pytest.raises(ValueError, match="op"):
        Target("x", 0, "", "a.b", "==", 1)
    with pytest.raises(ValueError, match="base path"):
        Target("x", 0, "", "a.b", "<=", 1, of_base="+")
    with pytest.raises(ValueError, match="of_base"):
        Target("x", 0, "", "a.b", "within", 1, base="a.c", of_base="+")


def test_every_target_reads_a_registered_metric_and_names_are_unique():
    assert len({t.name for t in TARGETS}) == len(TARGETS)
    for t in TARGETS:
        paths = [t.value, t.base, t.threshold if isinstance(t.threshold, str) else None]
        assert {p.split(".")[0] for p in paths if p} <= set(METRICS), t.name
