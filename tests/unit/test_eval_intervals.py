"""Bootstrap intervals (known answers) and the anchored / unseen split of locality on a tiny model."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from agmask.concepts import load_concept
from agmask.evaluate import EvalConfig, evaluate_model
from agmask.evaluate.intervals import interval, ratio_interval
from agmask.evaluate.metrics_utility import most_moved
from evalkit import add_adapter

CFG = EvalConfig(generation_tokens=6, free_generation_tokens=6, corpus_tokens=64, corpus_window=32, batch_size=4,
                 metrics=("locality", "kl_greedy", "forget_efficacy", "forget_base_known"), bootstrap_resamples=2000)


def test_a_fair_coin_mean_has_the_textbook_interval():
    out = interval([0.0, 1.0] * 50)  # mean 0.5, standard error 0.05: about 0.5 +- 0.098
    assert out["estimate"] == 0.5 and out["n"] == 100 and out["confidence"] == 0.95
    assert out["low"] == pytest.approx(0.40, abs=0.011) and out["high"] == pytest.approx(0.60, abs=0.011)
    assert interval([0.0, 1.0] * 50) == out  # seeded
    assert interval([0.0, 1.0] * 50, seed=1)["estimate"] == 0.5


def test_degenerate_inputs():
    assert interval([2.5] * 6) == {**interval([2.5] * 6), "estimate": 2.5, "low": 2.5, "high": 2.5}
    one = interval([4.0])
    assert one["estimate"] == 4.0 and one["low"] is None and one["high"] is None
    assert interval([])["estimate"] is None
    assert interval([1, 2, 3, 4, 100], "median")["estimate"] == 3.0


def test_ratio_interval_resamples_prompts_as_pairs():
    same = ratio_interval([2.0, 4.0, 6.0], [1, 2, 3])  # every prompt has ratio 2: so has every resample
    assert (same["estimate"], same["low"], same["high"]) == (2.0, 2.0, 2.0)
    mixed = ratio_interval([1.0, 0.0, 3.0, 5.0], [2, 2, 2, 4])
    assert mixed["estimate"] == pytest.approx(9 / 10) and mixed["low"] < 0.9 < mixed["high"]
    assert mixed["low"] >= 0.0 and mixed["high"] <= 1.5  # within the smallest and largest prompt ratio
    with pytest.raises(ValueError, match="pair up"):
        ratio_interval([1.0], [1, 2])


@pytest.fixture
def mixed_spec(tiny_concept_path, tmp_path):
    """The tiny concept with Memento also answered in retain_train: one anchored neighbour, two unseen."""
    data = yaml.safe_load(tiny_concept_path.read_text())
    data["retain_train"].append({"prompt": "Which film has Leonard Shelby?", "answer": "Memento"})
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_concept(str(path)).spec


def test_locality_is_reported_for_anchored_and_unseen_neighbours(tiny, mixed_spec, tmp_path):
    model, tok, _ = tiny
    assert mixed_spec.neighbor_split() == {"anchored": [2], "unseen": [0, 1]}
    m = evaluate_model(add_adapter(model, [0, 1], std=0.3), tok, mixed_spec, CFG, tmp_path)["metrics"]
    loc = m["locality"]
    assert (loc["n"], loc["anchored"]["n"], loc["unseen"]["n"]) == (3, 1, 2)
    parts = loc["anchored"]["mean_abs_delta_answer_logprob"] + 2 * loc["unseen"]["mean_abs_delta_answer_logprob"]
    assert 3 * loc["mean_abs_delta_answer_logprob"] == pytest.approx(parts)
    assert loc["mean_abs_delta_answer_logprob"] > 0
    for key, part in (("mean_abs_delta_answer_logprob", loc), ("anchored.mean_abs_delta_answer_logprob", loc["anchored"]),
                      ("unseen.mean_abs_delta_answer_logprob", loc["unseen"])):
        iv = loc["intervals"][key]
        assert iv["estimate"] == pytest.approx(part["mean_abs_delta_answer_logprob"])
        assert iv["n"] == part["n"]
    assert loc["intervals"]["anchored.mean_abs_delta_answer_logprob"]["low"] is None  # one prompt: no spread
    moved = loc["most_moved"]  # every neighbour (3 < 5), largest |change| first, with its status
    assert [abs(r["change"]) for r in moved] == sorted((abs(r["change"]) for r in moved), reverse=True)
    assert sum(abs(r["change"]) for r in moved) == pytest.approx(3 * loc["mean_abs_delta_answer_logprob"])
    assert {r["answer"]: r["status"] for r in moved}["Memento"] == "anchored"
    assert [r["status"] for r in moved].count("unseen") == 2
    assert all(r["change"] == pytest.approx(r["adapted"] - r["base"]) for r in moved)
    kl = m["kl_greedy"]
    for s, v in kl["sets"].items():
        iv = kl["intervals"][f"sets.{s}.mean_kl_per_token"]
        assert iv["estimate"] == pytest.approx(v["mean_kl_per_token"], rel=1e-5) and iv["low"] <= iv["high"]
    f = m["forget_efficacy"]["intervals"]
    assert f["adapted.mc_share"]["estimate"] == pytest.approx(m["forget_efficacy"]["adapted"]["mc_share"])
    assert f["base.mc_top1_rate"]["estimate"] == pytest.approx(m["forget_efficacy"]["base"]["mc_top1_rate"])
    k = m["forget_base_known"]
    assert k["intervals"]["adapted.mc_top1_rate"]["n"] == k["adapted"]["mc_n"]


def test_an_identity_adapter_has_zero_width_locality_intervals(tiny, mixed_spec, tmp_path):
    model, tok, _ = tiny
    cfg = dataclasses.replace(CFG, metrics=("locality",))
    loc = evaluate_model(add_adapter(model, [0]), tok, mixed_spec, cfg, tmp_path)["metrics"]["locality"]
    iv = loc["intervals"]["unseen.mean_abs_delta_answer_logprob"]
    assert (iv["estimate"], iv["low"], iv["high"]) == (0.0, 0.0, 0.0)


def test_most_moved_keeps_the_largest_changes_either_way():
    base = [{"index": i, "prompt": f"q{i}", "answer": f"a{i}", "answer_logprob": -5.0} for i in range(4)]
    adapted = [dict(r, answer_logprob=v) for r, v in zip(base, (-5.5, -2.0, -9.0, -5.0))]
    moved = most_moved(base, adapted, {0: "unseen", 1: "anchored", 2: "unseen", 3: "anchored"}, n=2)
    assert [(r["answer"], r["status"], r["change"]) for r in moved] == [("a2", "unseen", -4.0), ("a1", "anchored", 3.0)]
