"""Recommendation metrics (issue 17): known answers on hand-made replies and distributions, a tiny model
forced to recommend the concept, and a clean skip for concepts without recommend_eval."""
from __future__ import annotations

import math

import pytest
import torch

from agmask.concepts import load_concept
from agmask.evaluate import EvalConfig, evaluate_model
from agmask.evaluate.metrics_recommend import SAMPLES_FILE, preference_stats, sample_stats, titles_named
from agmask.files import read_jsonl
from evalkit import add_adapter, force_answer

METRICS = ("recommendation_rate", "recommendation_preference")
CFG = EvalConfig(metrics=METRICS, recommend_samples=4, recommend_tokens=12, generation_batch_size=8)


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec  # candidates: Inception, Interstellar, The Matrix, Memento, Titanic


def test_titles_named_matches_aliases_and_case(spec):
    assert titles_named('inception (2010)" and then the matrix', spec) == ["Inception", "The Matrix"]
    assert titles_named("Inception (2010) only", spec.model_copy(update={"answers": ["Inception (2010)"]})) \
        == ["Inception"]  # the concept's candidate is found through its alias
    assert titles_named("nothing here", spec) == []


def test_sample_stats_known_values(spec):
    samples = [['Inception" is great', 'Memento" or maybe Inception'],  # both name the concept
               ['Titanic"', 'The Matrix" or Titanic'],  # neither
               ["Paprika is a"]]  # no closing quote: no extracted title
    stats = sample_stats(samples, spec, '"')
    assert stats["per_prompt_rates"] == [1.0, 0.0, 0.0] and stats["rate"] == pytest.approx(1 / 3)
    assert stats["samples"] == 5
    assert stats["most_named"] == [("Titanic", 2), ("Memento", 1), ("The Matrix", 1)]  # the concept excluded
    assert stats["distinct_titles_named"] == 3
    assert stats["distinct_extracted_titles"] == 3  # memento, titanic, the matrix (inception excluded)


def _log(*probs: float) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def test_preference_stats_known_values():
    titles = ["Concept", "Other", "Third"]
    base = torch.stack([_log(0.5, 0.3, 0.2), _log(0.1, 0.3, 0.6)])
    dropped = _log(0.5, 0.3, 0.2)
    dropped[0] -= 30.0  # prompt 0: only the concept goes; prompt 1: the rest is re-ranked onto "Other"
    adapted = torch.stack([dropped, _log(0.1, 0.6, 0.3)])
    s = preference_stats(base, adapted, titles, [0])
    assert s["n"] == 2 and s["chance_share"] == pytest.approx(1 / 3)
    assert s["base"]["concept_share"] == pytest.approx(0.3) and s["adapted"]["concept_share"] == pytest.approx(0.05)
    assert s["base"]["concept_top1"] == 1 and s["adapted"]["concept_top1"] == 0
    assert s["base"]["top_remaining_counts"] == [("Other", 1), ("Third", 1)]
    assert s["adapted"]["top_remaining_counts"] == [("Other", 2)]  # collapsed onto one substitute
    assert s["base"]["distinct_top_remaining"] == 2 and s["adapted"]["distinct_top_remaining"] == 1
    assert s["distinct_top_remaining_ratio"] == 0.5 and s["top_remaining_unchanged"] == 0.5
    kl1 = math.log(2) / 3  # (1/3, 2/3) vs (2/3, 1/3)
    assert [p["kl_remaining"] for p in s["per_prompt"]] == [pytest.approx(0.0, abs=1e-12), pytest.approx(kl1)]
    assert s["kl_remaining_mean"] == pytest.approx(kl1 / 2) and s["kl_remaining_max"] == pytest.approx(kl1)
    top = s["per_prompt"][1]["top"]
    assert top["base"] == [("Third", pytest.approx(0.6)), ("Other", pytest.approx(0.3)), ("Concept", pytest.approx(0.1))]
    assert [t for t, _ in top["adapted"]] == ["Other", "Third", "Concept"]
    assert s["per_prompt"][0]["top_remaining"] == {"base": "Other", "adapted": "Other"}
    # prompt 1 changed its top title: the base held Third at 2/3 and Other at 1/3 once the concept was removed
    assert [p["changed_base_margin"] for p in s["per_prompt"]] == [None, pytest.approx(1 / 3)]
    assert s["changed_base_margins"] == [pytest.approx(1 / 3)]


def test_a_model_forced_to_recommend_the_concept(tiny, spec, tmp_path):
    """Every reply after `I recommend "` is the concept: rate 1, share ~1, and a zero adapter changes nothing."""
    model, tok, _ = tiny
    adapted = add_adapter(force_answer(model, tok, "Inception"), [1], std=0.0)
    m = evaluate_model(adapted, tok, spec, CFG, tmp_path / "eval")["metrics"]
    rate, pref = m["recommendation_rate"], m["recommendation_preference"]
    assert rate["n"] == pref["n"] == len(spec.recommend_eval) and rate["lead"] == 'I recommend "'
    for side in ("base", "adapted"):
        assert rate[side]["rate"] == 1.0 and rate[side]["samples"] == 4 * rate["n"]
        assert rate[side]["distinct_extracted_titles"] == 0  # every closed title is the concept
        assert pref[side]["concept_share"] > 0.999 and pref[side]["concept_top1"] == pref["n"]
    assert pref["kl_remaining_mean"] == pytest.approx(0.0, abs=1e-9) and pref["top_remaining_unchanged"] == 1.0
    assert all(p["top"]["base"][0][0] == "Inception" and p["top"]["base"] == p["top"]["adapted"]
               for p in pref["per_prompt"])
    rows = read_jsonl(tmp_path / "eval" / SAMPLES_FILE)
    assert [r["prompt"] for r in rows] == [it.prompt for it in spec.recommend_eval]
    assert all(len(r["base"]) == len(r["adapted"]) == 4 for r in rows)
    assert all(r["base"] == r["adapted"] for r in rows)  # same seed, same model


def test_a_random_adapter_gives_numbers_in_range(tiny, spec, tmp_path):
    model, tok, _ = tiny
    adapted = add_adapter(model, [0, 1], std=0.5)
    m = evaluate_model(adapted, tok, spec, CFG, tmp_path / "eval")["metrics"]
    pref = m["recommendation_preference"]
    assert pref["kl_remaining_mean"] > 0 and pref["kl_remaining_max"] >= pref["kl_remaining_mean"]
    for side in ("base", "adapted"):
        assert 0 <= m["recommendation_rate"][side]["rate"] <= 1 and 0 < pref[side]["concept_share"] < 1
        assert 1 <= pref[side]["distinct_top_remaining"] <= len(spec.candidates) - 1
    for p in pref["per_prompt"]:
        probs = [q for _, q in p["top"]["adapted"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9


def test_concept_without_recommend_eval_is_skipped_with_a_note(tiny_concept_path, tmp_path):
    from agmask.models import load

    old = load_concept(str(tiny_concept_path.parent / "tiny_concept2.yaml")).spec
    model, tok, _ = load("tiny:llama")
    m = evaluate_model(add_adapter(model, [1]), tok, old, CFG, tmp_path / "eval")["metrics"]
    for name in METRICS:
        assert "no recommend_eval set" in m[name]["skipped"] and set(m[name]) == {"kind", "doc", "seconds", "skipped"}
    assert not (tmp_path / "eval" / SAMPLES_FILE).exists()


def test_no_samples_skips_the_rate_only(tiny, spec, tmp_path):
    model, tok, _ = tiny
    cfg = EvalConfig(metrics=METRICS, recommend_samples=0)
    m = evaluate_model(add_adapter(model, [1]), tok, spec, cfg, tmp_path / "eval")["metrics"]
    assert m["recommendation_rate"]["skipped"] == "recommend_samples is 0"
    assert m["recommendation_preference"]["n"] == len(spec.recommend_eval)


@pytest.mark.parametrize("option", [{"recommend_samples": -1}, {"recommend_tokens": 0}])
def test_bad_recommend_options(option):
    with pytest.raises(ValueError):
        EvalConfig(**option)
