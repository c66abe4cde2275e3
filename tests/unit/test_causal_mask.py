"""Causal selection: the layer sweep against direct forwards, the mask inside the measured candidates, the stage."""
from __future__ import annotations

import pytest
import torch

from ablationkit import direct_ablated_logprob
from agmask.attribution.effects import Effect, activation_means, encode_prompts
from agmask.concepts import load_concept
from agmask.errors import AgmaskError, StageError
from agmask.masking.causal import (CausalOptions, Group, candidate_groups, causal_selection, choose_groups,
                                   neighbour_items)
from agmask.scoring import select_items


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _score(info, seed: int = 0) -> torch.Tensor:
    return torch.rand(info.num_layers, info.intermediate_size, generator=torch.Generator().manual_seed(seed))


def test_candidate_groups_are_consecutive_attribution_ranks_per_layer():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3], [5.0, 4.0, 3.0, 2.0, 1.0]])
    groups = candidate_groups(score, [0, 1], candidates=4, group_size=3)
    assert [(g.layer, g.rank, g.units) for g in groups] == [(0, 0, [1, 3, 2]), (0, 3, [4]), (1, 0, [0, 1, 2]),
                                                             (1, 3, [3])]


def test_choose_groups_takes_the_best_ratio_first_skips_non_forgetting_groups_and_cuts_the_last():
    groups = [Group(0, 0, [1, 2, 3], Effect(1.0, 0.5)),  # ratio 2
              Group(0, 3, [4, 5, 6], Effect(0.3, 0.01)),  # ratio 0.3 / 0.05 = 6 (floor)
              Group(1, 0, [7, 8, 9], Effect(-1.0, 0.0)),  # raises the concept: never taken
              Group(1, 3, [10, 11], Effect(2.0, 2.0))]  # ratio 1
    assert choose_groups(groups, k=5, floor=0.05) == [(1, [4, 5, 6]), (0, [1, 2])]
    assert choose_groups(groups, k=100, floor=0.05) == [(1, [4, 5, 6]), (0, [1, 2, 3]), (3, [10, 11])]


def test_neighbour_items_are_the_candidate_answered_retain_items_else_all(spec):
    items, note = neighbour_items(spec)
    assert items == list(spec.retain_train) and note.startswith("all of retain_train")  # tiny: none is a candidate
    films = spec.model_copy(update={"candidates": spec.candidates + ["The Prestige"]})
    items, note = neighbour_items(films)
    assert [it.answer for it in items] == ["The Prestige"] and "candidates" in note


def test_layer_sweep_equals_direct_forwards_and_keeps_the_best_ratio_layers(tiny, spec):
    model, tok, info = tiny
    opts = CausalOptions(k=10, num_layers=2, candidates=16, group_size=4, items=3, neighbour_floor=0.05)
    chosen = causal_selection(model, tok, spec, _score(info), opts)
    sweep = chosen.record["layer_sweep"]
    assert [row["layer"] for row in sweep] == list(range(info.num_layers))
    retain = encode_prompts(tok, spec, "retain_train", spec.retain_train, kinds=("subject",))
    means = activation_means(model, tok, retain)["subject"]
    forget = [it for _, it in select_items(spec.forget_train, 3)]
    neighbours = [it for _, it in select_items(spec.retain_train, 3)]
    every = list(range(info.intermediate_size))
    for layer, row in enumerate(sweep):
        drop = [direct_ablated_logprob(model, tok, spec, "forget_train", it, {}, means, "subject")
                - direct_ablated_logprob(model, tok, spec, "forget_train", it, {layer: every}, means, "subject")
                for it in forget]
        moved = [abs(direct_ablated_logprob(model, tok, spec, "retain_train", it, {layer: every}, means, "subject")
                     - direct_ablated_logprob(model, tok, spec, "retain_train", it, {}, means, "subject"))
                 for it in neighbours]
        assert row["concept_effect"] == pytest.approx(sum(drop) / len(drop), abs=1e-4)
        assert row["neighbour_effect"] == pytest.approx(sum(moved) / len(moved), abs=1e-4)
        assert row["ratio"] == pytest.approx(row["concept_effect"] / max(row["neighbour_effect"], 0.05), rel=1e-6)
    ranked = sorted(sweep, key=lambda r: (r["concept_effect"] > 0, r["ratio"]), reverse=True)
    kept = sorted(r["layer"] for r in ranked[:2])
    assert chosen.record["layers_by_effect"][:2] == [r["layer"] for r in ranked[:2]]
    assert sorted({g.layer for g in chosen.groups}) == kept
    assert set(torch.nonzero(chosen.mask.any(1)).flatten().tolist()) <= set(kept)


def test_the_mask_is_a_strict_subset_of_the_measured_candidates(tiny, spec):
    model, tok, info = tiny
    score = _score(info, 1)
    opts = CausalOptions(k=12, layers=(0, 2), candidates=20, group_size=5, items=2)
    chosen = causal_selection(model, tok, spec, score, opts)
    mask, cand = chosen.mask, chosen.candidates
    assert mask.shape == cand.shape == (info.num_layers, info.intermediate_size)
    assert not (mask & ~cand).any()  # nothing outside the measured candidates
    assert 0 < int(mask.sum()) <= 12 < int(cand.sum()) == 40
    assert not cand[1].any() and chosen.record["layer_sweep"] is None  # explicit layers: no sweep
    for layer in (0, 2):  # the candidates are each layer's top 20 by score
        assert set(torch.nonzero(cand[layer]).flatten().tolist()) == set(torch.topk(score[layer], 20).indices.tolist())
    taken = [g for g in chosen.record["groups"] if g["taken"]]
    left = [g for g in chosen.record["groups"] if not g["taken"] and g["concept_effect"] > 0]
    assert all(g["concept_effect"] > 0 for g in taken)
    assert not left or min(g["ratio"] for g in taken) >= max(g["ratio"] for g in left)  # best ratios first
    assert sum(g["taken"] for g in chosen.record["groups"]) == int(mask.sum())
    for (layer, unit), i in chosen.unit_groups.items():
        assert mask[layer, unit] and unit in chosen.groups[i].units and chosen.groups[i].layer == layer


def test_causal_selection_refuses_bad_layers(tiny, spec):
    model, tok, info = tiny
    with pytest.raises(StageError, match="unknown layer"):
        causal_selection(model, tok, spec, _score(info), CausalOptions(layers=(7,)))


def test_mask_stage_with_causal_selection_writes_the_measurements(tmp_path, tiny_concept_path):
    from agmask.config import RunConfig
    from agmask.files import load_tensors, read_json
    from agmask.pipeline import run_pipeline

    over = {"attribute": {"positions": "all"},
            "mask": {"selection": "causal", "k": 10, "num_layers": 2, "candidates": 16, "group_size": 4,
                     "causal_items": 2}}
    cfg = RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run", overrides=over)
    run_pipeline(cfg, stages=["attribute", "mask"])
    masks = load_tensors(tmp_path / "run" / "mask" / "mask.safetensors")
    info = read_json(tmp_path / "run" / "mask" / "mask.json")
    assert {"mask", "random", "full_layers", "candidates"} <= set(masks)
    assert not (masks["mask"] & ~masks["candidates"]).any()
    assert info["selection"] == "causal" and info["selected"] == int(masks["mask"].sum())
    assert info["layers"] == sorted(torch.nonzero(masks["mask"].any(1)).flatten().tolist())
    assert len(info["causal"]["layer_sweep"]) == 3 and {"mask_effect", "random_effect"} <= set(info["causal"])
    for layer, row in info["per_layer"].items():
        assert len(row["units"]) == len(row["concept_effect"]) == len(row["neighbour_effect"]) == len(row["scores"])
    assert read_json(tmp_path / "run" / "attribute" / "layers.json")["positions"] == "all"


@pytest.mark.parametrize("option,value,message", [("selection", "best", "selection must be one of 'score' or 'causal', got 'best'"),
                                                  ("causal_positions", "x", "must be one of 'answer', 'all', 'subject' or 'prompt', got 'x'"),
                                                  ("group_size", 0, "must be >= 1")])
def test_mask_options_are_checked(option, value, message):
    from agmask.config import RunConfig, resolve_stage_config
    from agmask.stages import mask

    cfg = RunConfig(model="tiny:llama", concepts=["inception"], overrides={"mask": {option: value}})
    with pytest.raises(AgmaskError, match=message):
        resolve_stage_config(mask, cfg)
