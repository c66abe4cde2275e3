"""`agmask ablate`: the mask's top units, effects equal to a direct forward with the units replaced, the ratios
and their flags, and the stage's artefacts on a tiny model."""
from __future__ import annotations

import pytest
import torch

from agmask.attribution.ablation import random_like
from agmask.attribution.effects import activation_means, encode_prompts
from agmask.cli.main import main
from agmask.comparison.ablation import (RANDOM_NOT_LOWERED, TOP_NOT_LOWERED, ablation_effects, as_ablation, summary,
                                        top_units)
from agmask.concepts import load_concept
from agmask.config import RunConfig
from agmask.files import read_json
from agmask.pipeline import read_done, run_pipeline
from ablationkit import direct_ablated_logprob


def test_top_units_are_the_mask_s_best_scored_in_score_order():
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, [1, 2]] = True
    mask[2, [0, 5]] = True
    score = torch.arange(18, dtype=torch.float).reshape(3, 6)
    score[0, 1] = 100.0  # the best unit of the mask, in the lowest layer
    score[1, 3] = 1000.0  # not in the mask: never taken
    assert top_units(mask, score, 2) == [(0, 1), (2, 5)]
    assert top_units(mask, score, 0) == [(0, 1), (2, 5), (2, 0), (0, 2)]  # 0: the whole mask
    assert top_units(mask, score, 10) == top_units(mask, score, 0)
    ab = as_ablation([(0, 1), (2, 5), (2, 0)], 6)
    assert set(ab) == {0, 2} and ab[2].tolist() == [True, False, False, False, False, True]


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_ablation_effects_equal_a_direct_forward_with_the_units_replaced(tiny, tiny_concept_path, ablation):
    model, tok, info = tiny
    spec = load_concept(str(tiny_concept_path)).spec
    if ablation == "mean":
        means = activation_means(model, tok, encode_prompts(tok, spec, "retain_train", spec.retain_train))["all"]
    else:
        means = torch.zeros(info.num_layers, info.intermediate_size)
    units = [(1, 3), (1, 7), (2, 11), (2, 40)]
    items = spec.forget_eval[:3]
    out = ablation_effects(model, tok, spec, units, {"forget_eval": ("forget_eval", items), "none": ("neighbors", [])},
                           "all", means, draws=2, seed=5, batch_size=4)
    assert out["none"] == {"set": "neighbors", "n": 0}
    got = out["forget_eval"]
    gen = torch.Generator().manual_seed(5)
    draws = [random_like(units, info.intermediate_size, gen) for _ in range(2)]

    def direct(chosen) -> list[float]:
        by_layer: dict[int, list[int]] = {}
        for layer, unit in chosen:
            by_layer.setdefault(layer, []).append(unit)
        return [direct_ablated_logprob(model, tok, spec, "forget_eval", it, by_layer, means, "all")
                - direct_ablated_logprob(model, tok, spec, "forget_eval", it, {}, means, "all") for it in items]

    assert got["top"]["per_prompt"] == pytest.approx(direct(units), abs=1e-4)
    assert got["top"]["mean_change"] == pytest.approx(sum(direct(units)) / 3, abs=1e-4)
    expected = [sum(direct(d)) / 3 for d in draws]
    assert got["random"]["per_draw"] == pytest.approx(expected, abs=1e-4)
    assert got["random"]["mean_change"] == pytest.approx(sum(expected) / 2, abs=1e-4)
    assert not any(set(d) & set(units) for d in draws)  # random units are never the top ones
    assert abs(got["top"]["mean_change"]) > 1e-3  # the ablation did something
    assert all(not m._forward_pre_hooks for m in model.modules())


def _effects(top: float, random: float, neighbours: dict[str, float]) -> dict:
    out = {"forget_eval": {"n": 3, "top": {"mean_change": top}, "random": {"mean_change": random}}}
    for name, change in neighbours.items():
        out[f"neighbors.{name}"] = {"n": 2, "top": {"mean_abs_change": change}}
    out["neighbors.none"] = {"n": 0}
    return out


def test_summary_ratios_and_their_flags():
    s = summary(_effects(-2.0, -0.5, {"anchored": 0.5, "unseen": 1.0}))
    assert s == {"concept_drop_top": 2.0, "concept_drop_random": 0.5, "flag": None, "top_vs_random": 4.0,
                 "neighbour_vs_concept": {"anchored": 0.25, "unseen": 0.5}}
    s = summary(_effects(-2.0, 0.1, {"unseen": 1.0}))
    assert s["top_vs_random"] is None and s["flag"] == RANDOM_NOT_LOWERED and s["neighbour_vs_concept"] == {"unseen": 0.5}
    s = summary(_effects(0.3, -0.5, {"unseen": 1.0}))
    assert s["top_vs_random"] is None and s["flag"] == TOP_NOT_LOWERED and s["neighbour_vs_concept"] == {"unseen": None}
    assert summary({"forget_eval": {"n": 0}})["flag"] == "no forget_eval items"


def test_the_ablate_stage_writes_its_artefacts_and_prints_its_table(tmp_path, tiny_concept_path, capsys):
    overrides = {"mask": {"k": 12, "num_layers": 2}, "ablate": {"k": 5, "draws": 2}}
    cfg = RunConfig(model="tiny:qwen2", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run",
                    overrides=overrides)
    run_pipeline(cfg, stages=["attribute", "mask", "ablate"])
    result = read_json(tmp_path / "run" / "ablate" / "ablation.json")
    assert result["units"] == 5 and result["mask_units"] == 12 and result["ranked_by"] == "combined"
    assert set(result["sets"]) == {"forget_eval", "neighbors.anchored", "neighbors.unseen"}
    spec = load_concept(str(tiny_concept_path)).spec
    split = spec.neighbor_split()
    assert result["sets"]["forget_eval"]["n"] == len(spec.forget_eval)
    assert [result["sets"][f"neighbors.{s}"]["n"] for s in ("anchored", "unseen")] == [len(split["anchored"]),
                                                                                      len(split["unseen"])]
    assert len(result["sets"]["forget_eval"]["random"]["per_draw"]) == 2
    half = result["split_half"]
    total = 3 * 80
    assert 0.0 <= half["jaccard"] <= 1.0 and half["chance"] == pytest.approx(5 / (2 * total - 5))
    assert sum(half["halves"]) == len(spec.forget_train)
    done = read_done(tmp_path / "run", "ablate")
    assert set(done["outputs"]) == {"ablate/ablation.json", "ablate/ablation.png"}
    from agmask.report import build_report
    from reportkit import section_html

    section = section_html(build_report(tmp_path / "run").read_text(encoding="utf-8"), "ablate")
    assert "ablate/ablation.png" in section and "neighbors.unseen" in section and "split-half Jaccard" in section
    code = main(["ablate", "--run-dir", str(tmp_path / "run"), "-q", "--set", "mask.k=12", "--set", "mask.num_layers=2",
                 "--set", "ablate.k=5", "--set", "ablate.draws=2"])
    printed = capsys.readouterr().out
    assert code == 0 and "ablate: mean-ablation of the mask's top 5 units" in printed and "split-half Jaccard" in printed
