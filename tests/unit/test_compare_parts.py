"""`agmask compare` without a model: the random-layers mask, each variant's mask, the row columns and their
mean / sd, and which earlier rows a comparison keeps."""
from __future__ import annotations

import statistics

import pytest
import torch

from agmask.comparison.rows import attack_label, metric_columns, summarise
from agmask.comparison.runner import SCHEMA, previous_rows
from agmask.comparison.variants import (DEFAULT_VARIANTS, get_variant, selected_needed, training_key, variant_mask,
                                        variants)
from agmask.errors import StageError
from agmask.files import write_json
from agmask.masking import full_layer_mask, random_layers_mask, random_mask_like


def _mask(layers_units: dict[int, list[int]], shape=(6, 20)) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for layer, units in layers_units.items():
        mask[layer, units] = True
    return mask


def _counts(mask: torch.Tensor) -> dict[int, int]:
    return {l: int(mask[l].sum()) for l in torch.nonzero(mask.any(1)).flatten().tolist()}


def test_random_layers_mask_moves_the_per_layer_counts_to_other_layers_and_is_seeded():
    mask = _mask({1: [0, 1, 2], 4: [5, 6, 7, 8, 9]})
    out = random_layers_mask(mask, torch.Generator().manual_seed(0))
    counts = _counts(out)
    assert sorted(counts.values()) == [3, 5]  # the same counts per layer
    assert not set(counts) & {1, 4}  # in layers the mask does not touch (the model has 4 others)
    assert out.sum() == mask.sum() and out.dtype == torch.bool and out.shape == mask.shape
    again = random_layers_mask(mask, torch.Generator().manual_seed(0))
    other = random_layers_mask(mask, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)
    # i-th drawn layer takes the i-th count: over seeds both counts land on every other layer
    seen = {(l, c) for s in range(30) for l, c in _counts(random_layers_mask(mask, torch.Generator().manual_seed(s))).items()}
    assert {l for l, _ in seen} == {0, 2, 3, 5} and {c for _, c in seen} == {3, 5}


def test_random_layers_mask_falls_back_to_all_layers_when_too_few_others():
    mask = _mask({0: [1], 1: [2, 3], 2: [4]}, shape=(4, 10))  # 3 layers used, 1 other
    out = random_layers_mask(mask, torch.Generator().manual_seed(3))
    assert sorted(_counts(out).values()) == [1, 1, 2] and len(_counts(out)) == 3


def test_each_variant_gets_the_mask_it_names():
    causal, saliency = _mask({2: [0, 1, 2, 3]}), _mask({3: [4, 5], 4: [6, 7]})
    selected = {"causal": causal, "saliency": saliency}
    got = {name: variant_mask(get_variant(name), selected, "causal", seed=0) for name in DEFAULT_VARIANTS}
    assert torch.equal(got["causal"][0], causal) and got["causal"][1] == [2]
    assert torch.equal(got["saliency"][0], saliency) and got["saliency"][1] == [3, 4]
    same = got["random_same_layers"][0]
    assert _counts(same) == _counts(causal) and not torch.equal(same, causal)
    assert torch.equal(same, random_mask_like(causal, torch.Generator().manual_seed(0)))
    moved = got["random_layers"][0]
    assert sorted(_counts(moved).values()) == [4] and got["random_layers"][1] != [2]
    assert torch.equal(got["full_layers"][0], full_layer_mask(causal)) and got["full_layers"][1] == [2]
    assert got["unmasked"] == (None, [2])
    # the controls copy the reference: with reference=saliency they follow its layers and counts
    ref_sal = variant_mask(get_variant("random_same_layers"), selected, "saliency", seed=0)[0]
    assert _counts(ref_sal) == _counts(saliency)
    # another seed, another random mask; the selected masks do not depend on the seed
    assert not torch.equal(variant_mask(get_variant("random_same_layers"), selected, "causal", 1)[0], same)
    assert torch.equal(variant_mask(get_variant("causal"), selected, "causal", 1)[0], causal)


def test_every_method_is_a_variant_on_the_mask_its_parameterisation_names():
    from agmask.unlearn import METHODS

    known = variants()
    assert set(METHODS) <= set(known) and set(DEFAULT_VARIANTS) <= set(known)
    assert known["masked_lora"].mask == "reference" and known["random_mask"].mask == "random_same_layers"
    assert {known[n].mask for n in ("ga", "npo", "rmu", "unmasked_lora")} == {"unmasked"}
    assert all(known[n].method == "masked_lora" for n in DEFAULT_VARIANTS)
    with pytest.raises(StageError, match="did you mean causal"):
        get_variant("causl")
    assert selected_needed(["saliency"], "causal") == ["saliency"]
    assert selected_needed(["saliency", "unmasked"], "causal") == ["causal", "saliency"]
    assert selected_needed(["ga"], "saliency") == ["saliency"]


def test_training_key_equates_a_whole_layer_mask_with_no_mask_and_nothing_else():
    part, whole = _mask({2: [0, 1]}), _mask({2: list(range(20))})
    assert training_key("masked_lora", whole, [2]) == training_key("masked_lora", None, [2])
    assert training_key("masked_lora", part, [2]) != training_key("masked_lora", None, [2])
    assert training_key("ga", None, [2]) != training_key("masked_lora", None, [2])
    assert training_key("masked_lora", None, [2]) != training_key("masked_lora", None, [3])
    assert training_key("masked_lora", part, [2]) != training_key("masked_lora", _mask({2: [0, 2]}), [2])


def _view(top1: int, share: float) -> dict:
    return {"n": 4, "mc_n": 4, "mc_top1_count": top1, "mc_share": share, "median_first_token_rank": 3}


def test_metric_columns_known_answer():
    iv = lambda lo, hi: {"estimate": (lo + hi) / 2, "low": lo, "high": hi}  # noqa: E731
    metrics = {
        "forget_base_known": {"kind": "forget", "adapted": {"mc_top1_rate": 0.25, "mc_share": 0.1,
                                                            "median_first_token_rank": 40},
                              "forget_eval_mean_logprob_change": -3.5,
                              "intervals": {"adapted.mc_share": iv(0.05, 0.2), "adapted.mc_top1_rate": iv(0.0, 0.5)}},
        "locality": {"kind": "locality", "mean_abs_delta_answer_logprob": 0.8, "anchored": {
            "mean_abs_delta_answer_logprob": 0.5}, "unseen": {"mean_abs_delta_answer_logprob": 1.1},
                     "intervals": {"unseen.mean_abs_delta_answer_logprob": iv(0.7, 1.6),
                                   "anchored.mean_abs_delta_answer_logprob": {"low": None, "high": None}}},
        "kl_greedy": {"kind": "utility", "sets": {"retain_eval": {"mean_kl_per_token": 0.02}}},
        "attack_relearn_full": {"kind": "attack", "variants": {
            "relearn k=20": {"recovered_fraction": 0.5, "flag": None,
                             "base_known": {"base": _view(4, 0.6), "attacked": _view(1, 0.3)}},
            "control k=20": {"recovered_fraction": None, "flag": "near_zero_denominator",
                             "base_known": {"base": _view(0, 0.6), "attacked": _view(0, 0.3)}}}},
        "attack_quantization_full": {"kind": "attack", "variants": {"int4": {"recovered_fraction": 0.1, "flag": None}}},
    }
    row, ci = metric_columns(metrics)
    assert row == {"forget_known_mc_top1": 0.25, "forget_known_mc_share": 0.1, "forget_known_median_rank": 40,
                   "forget_eval_dlogp": -3.5, "neighbours_abs_dlogp": 0.8, "neighbours_anchored_abs_dlogp": 0.5,
                   "neighbours_unseen_abs_dlogp": 1.1, "retain_kl": 0.02,
                   "relearn_k20_recovered": 0.5, "relearn_k20_mc_top1_vs_base": 0.25,
                   "control_k20_recovered": None, "control_k20_flag": "near_zero_denominator",
                   "control_k20_mc_top1_vs_base": None,  # the base answered none: no ratio
                   "quant_int4_recovered": 0.1, "quant_int4_mc_top1_vs_base": None}
    assert ci == {"forget_known_mc_top1": [0.0, 0.5], "forget_known_mc_share": [0.05, 0.2],
                  "neighbours_unseen_abs_dlogp": [0.7, 1.6]}  # an interval without bounds is left out
    assert attack_label("attack_relearn", "k=10") == "relearn_masked_k10"
    assert attack_label("attack_quantization", "int8") == "quant_lora_int8"


def test_summarise_gives_mean_and_sd_over_seeds_and_the_interval_with_one_seed():
    rows = [{"columns": {"a": 1.0, "b": None, "flag": "x", "ok": True}, "ci": {"a": [0.0, 2.0]}},
            {"columns": {"a": 2.0, "b": 5.0}, "ci": {}}, {"columns": {"a": 4.0, "b": float("nan")}, "ci": {}}]
    s = summarise(rows)
    assert s["n_seeds"] == 3 and s["mean"] == {"a": pytest.approx(7 / 3), "b": 5.0}
    assert s["sd"]["a"] == pytest.approx(statistics.stdev([1.0, 2.0, 4.0])) and s["sd"]["b"] is None
    assert s["n"] == {"a": 3, "b": 1} and "ci" not in s  # strings, bools and NaN are not numbers to average
    one = summarise(rows[:1])
    assert one["mean"] == {"a": 1.0} and one["sd"] == {"a": None} and one["ci"] == {"a": [0.0, 2.0]}


def test_previous_rows_keeps_rows_of_the_same_key_only(tmp_path):
    def doc(rows):
        return {"schema": SCHEMA, "variants": {"causal": {"rows": rows}}}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, doc([{"variant": "causal", "seed": 0, "key": "k", "columns": {"x": 1}},
                       {"variant": "causal", "seed": 1, "key": "other", "columns": {"x": 2}}]))
    write_json(b, doc([{"variant": "causal", "seed": 0, "key": "k", "columns": {"x": 9}},
                       {"variant": "causal", "seed": 2, "key": "k", "columns": {"x": 3}}]))
    (tmp_path / "bad.json").write_text("{not json")
    write_json(tmp_path / "old.json", {"methods": {"causal": {}}})  # the old bench script's format
    found = previous_rows([a, tmp_path / "bad.json", tmp_path / "old.json", b, tmp_path / "missing.json"], "k")
    assert set(found) == {("causal", 0), ("causal", 2)}
    assert found[("causal", 0)]["columns"] == {"x": 1}  # the first source wins
