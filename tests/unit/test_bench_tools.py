"""The measuring tools of bench/: forward counts (known answers on a tiny model) and the run comparison."""
from __future__ import annotations

import pytest
import torch

from runkit import bench_module


@pytest.fixture(scope="module")
def counts():
    return bench_module("forward_counts")


@pytest.fixture(scope="module")
def same():
    return bench_module("same_numbers")


def test_counter_counts_prefill_decode_train_and_repeats(counts):
    from agmask.models import load
    from agmask.scoring.kvcache import empty_cache

    model, _, _ = load("tiny:llama")
    ids = torch.randint(0, 200, (2, 5), generator=torch.Generator().manual_seed(0))
    counter = counts.ForwardCounter(model)
    with counter.attached():
        counter.label = "a"
        with torch.no_grad():
            cache = empty_cache(model)
            model(input_ids=ids, past_key_values=cache, use_cache=True)  # prefill: 2 x 5 tokens, logits at all 10
            model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)  # one decoding step: 2 tokens
            counter.label = "b"
            model(input_ids=ids)  # the same ids on the same weights: repeated
        with torch.enable_grad():
            model(input_ids=ids)  # under autograd: training
    with torch.no_grad():
        model(input_ids=ids)  # hooks removed: not counted
    a, b = counter.counts["a"], counter.counts["b"]
    assert (a["calls"], a["prefill"], a["decode"], a["train"], a["repeated"], a["head_rows"]) == (2, 10, 2, 0, 0, 12)
    assert (b["calls"], b["prefill"], b["train"], b["repeated"], b["head_rows"]) == (2, 10, 10, 10, 20)
    assert a["cpu_s"] >= 0 and b["cpu_s"] >= 0


def test_counter_counts_skipped_layers_as_a_fraction_and_tells_adapters_apart(counts):
    from agmask.lora import attach_lora
    from agmask.models import load
    from agmask.models.arch import num_layers
    from agmask.scoring.logprobs import hidden_states

    model, _, _ = load("tiny:llama")
    layers = num_layers(model)
    ids = torch.randint(0, 200, (1, 6), generator=torch.Generator().manual_seed(1))
    counter = counts.ForwardCounter(model)
    with counter.attached(), torch.no_grad():
        start = torch.zeros(1, 6, model.config.hidden_size)
        hidden_states(model, ids, torch.ones_like(ids), start_layer=1, start_hidden=start)
    assert counter.counts["(unlabelled)"]["prefill"] == pytest.approx(6 * (layers - 1) / layers)

    mask = torch.zeros(layers, model.config.intermediate_size, dtype=torch.bool)
    mask[:, :4] = True
    adapter = attach_lora(model, mask, r=2)
    for name, p in adapter.model.named_parameters():  # a non-zero adapter: the adapted model differs
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(2))
    counter = counts.ForwardCounter(adapter.model)
    with counter.attached(), torch.no_grad():
        adapter.model(input_ids=ids)
        with adapter.model.disable_adapter():
            adapter.model(input_ids=ids)  # the base model: another state
            adapter.model(input_ids=ids)  # the same state again
    assert counter.counts["(unlabelled)"]["repeated"] == 6


def test_differences_compares_values_within_the_tolerance(same):
    a = {"x": 1.0, "seconds": 3.0, "rows": [{"t": "a", "v": 0.5}], "flag": True, "none": None}
    b = {"x": 1.00005, "seconds": 9.0, "rows": [{"t": "a", "v": 0.5}], "flag": True, "none": None}
    assert same.differences(a, b, 1e-4) == []
    assert same.differences(a, {**b, "x": 1.001}, 1e-4) == [".x: 1.0 != 1.001 (|diff| 0.001)"]
    assert same.differences(a, {**b, "rows": [{"t": "b", "v": 0.5}]}, 1e-4) == [".rows[0].t: 'a' != 'b'"]
    assert same.differences(a, {**b, "rows": []}, 1e-4) == [".rows: 1 != 0 entries"]
    assert same.differences(a, {**b, "flag": 1}, 1e-4) == [".flag: True != 1"]
    assert same.differences({"y": 1}, {}, 0) == [".y: only in A"]
    assert same.differences(2000.0, 2000.1, 1e-4) == []  # relative above 1
