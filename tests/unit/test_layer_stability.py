"""bench/layer_stability.py: per-sample attribution cached once, layer criteria and overlaps on known signals."""
from __future__ import annotations

import pytest
import torch

from runkit import bench_module


@pytest.fixture(scope="module")
def stability():
    return bench_module("layer_stability")


def planted(layers: tuple[int, ...], n: int = 6, n_layers: int = 8, width: int = 32) -> dict:
    """Per-sample stats where forget prompts load `layers` (units 0-15) far more than retain prompts do."""
    gen = torch.Generator().manual_seed(0)
    forget = {s: torch.rand(n, n_layers, width, generator=gen) for s in ("saliency", "fisher")}
    retain = {s: torch.rand(n, n_layers, width, generator=gen) for s in ("saliency", "fisher")}
    for s in forget:
        forget[s][:, list(layers), :16] += 10.0
    return {"forget_train": forget, "retain_train": retain}


def test_count_and_window_criteria_find_the_planted_layers(stability):
    stats = planted((3, 4))
    every = (list(range(6)), list(range(6)))
    picked, units = stability.chosen(stability._counts(20), stats, *every, 2)
    assert picked == [3, 4]
    assert {l for l, _ in units} == {3, 4} and len(units) == 64  # K (256) exceeds the two layers' 64 units
    window = stability._window(32, width=3)(*[{s: t for s, t in stats[k].items()} for k in stats])
    assert window[:3] in ([2, 3, 4], [3, 4, 5]) and sorted(window) == list(range(8))


def test_all_layers_keeps_every_layer_and_jaccard_is_the_overlap_share(stability):
    stats = planted((1,))
    picked, _ = stability.chosen(stability._all_layers, stats, [0, 1, 2], [0, 1, 2], 4)
    assert picked == list(range(8))
    assert stability.jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert stability.jaccard({(0, 1)}, {(0, 1)}) == 1.0


def test_stats_are_cached_per_sample_and_read_back(stability, tmp_path):
    state: dict = {}
    first = stability.cached_stats("inception", tmp_path, "tiny:llama", 8, state)
    from agmask.concepts import load_concept

    spec = load_concept("inception").spec
    layers, width = state["model"][0].config.num_hidden_layers, state["model"][0].config.intermediate_size
    assert first["forget_train"]["saliency"].shape == (len(spec.forget_train), layers, width)
    assert first["retain_train"]["fisher"].shape == (len(spec.retain_train), layers, width)
    assert (tmp_path / "inception.pt").is_file()
    again = stability.cached_stats("inception", tmp_path, "no-such-model", 8, {})  # read from the cache: no load
    assert torch.equal(again["forget_train"]["saliency"], first["forget_train"]["saliency"])


def test_report_prints_one_row_per_criterion_from_training_sets_only(stability, tmp_path, capsys):
    stats = stability.cached_stats("inception", tmp_path, "tiny:llama", 8, {})
    stability.report("inception", stats, subset=6, pairs=2, layers=2, seed=0)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("inception")]
    assert len(rows) == len(stability.CRITERIA)
    assert all("pairs J" in r and "demo" in r and "vs A" in r for r in rows)
    assert "full all" in next(r for r in rows if "all layers" in r)
