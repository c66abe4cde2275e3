"""Mean-ablation effects: the batched, prefix-cached measurement against a direct forward with the units replaced."""
from __future__ import annotations

import pytest
import torch

from agmask.attribution.effects import (ablated_logprobs, activation_means, cache_inputs, effects, encode_prompts,
                                        mean_ablation)
from agmask.concepts import load_concept
from agmask.probing import capture, mlp_hook_name
from agmask.scoring import collate_answers, prefix_for
from agmask.scoring.encode import closing_for, tokens
from agmask.scoring.logprobs import answer_logprobs
from ablationkit import direct_ablated_logprob as _direct


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _as_mask(units: list[int], width: int) -> torch.Tensor:
    m = torch.zeros(width, dtype=torch.bool)
    m[units] = True
    return m


@pytest.mark.parametrize("kind", ["all", "subject", "prompt"])
def test_mean_ablation_effect_equals_a_direct_forward_with_units_replaced(tiny, spec, kind):
    model, tok, info = tiny
    width = info.intermediate_size
    retain = encode_prompts(tok, spec, "retain_train", spec.retain_train, kinds=(kind,))
    means = activation_means(model, tok, retain)[kind]  # (L, I)
    items = spec.forget_train + spec.forget_eval[:2]  # different lengths: rows are padded
    prompts = encode_prompts(tok, spec, "forget_train", items, kinds=(kind,))
    cache_inputs(model, tok, prompts, [1, 2])
    header = len(tokens(tok, "<|im_start|>user\n"))
    # subject ablations leave the shared chat header clean: its keys and values are reused, not recomputed
    assert prompts.shared == header and prompts.free_of(kind) == (0 if kind == "all" else header)
    assert len(prompts.header) == info.num_layers and prompts.header[0][0].shape[2] == header
    groups = {1: [[3, 7, 11], [0, 79]], 2: [[5], list(range(40))]}
    mixed = {1: [2, 4], 2: [60, 61, 62]}  # two layers at once, starting from layer 1's cached input
    ablations = [{l: _as_mask(g, width)} for l, gs in groups.items() for g in gs] + \
                [{l: _as_mask(u, width) for l, u in mixed.items()}]
    expected_units = [{l: g} for l, gs in groups.items() for g in gs] + [mixed]
    got = ablated_logprobs(model, tok, prompts, ablations, kind, means, batch_size=5)  # rows mix ablations
    assert got.shape == (len(ablations), len(items))
    for a, units in enumerate(expected_units):
        for n, item in enumerate(items):
            assert abs(float(got[a, n]) - _direct(model, tok, spec, "forget_train", item, units, means, kind)) < 1e-4
    assert not torch.allclose(got, prompts.base.expand_as(got), atol=1e-3)  # the ablations did something
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_clean_log_probs_and_an_empty_ablation_match_the_plain_forward(tiny, spec):
    model, tok, info = tiny
    prompts = encode_prompts(tok, spec, "forget_train", spec.forget_train)
    cache_inputs(model, tok, prompts, [0, 2], batch_size=3)
    direct = torch.tensor([_direct(model, tok, spec, "forget_train", it, {}, None, "all") for it in spec.forget_train])
    assert torch.allclose(prompts.base, direct, atol=1e-5)
    nothing = {2: torch.zeros(info.intermediate_size, dtype=torch.bool)}
    means = torch.zeros(info.num_layers, info.intermediate_size)
    assert torch.allclose(ablated_logprobs(model, tok, prompts, [nothing], "all", means)[0], direct, atol=1e-5)


def test_activation_means_are_the_mean_over_the_kind_positions(tiny, spec):
    model, tok, info = tiny
    prompts = encode_prompts(tok, spec, "retain_train", spec.retain_train, kinds=("all", "subject", "answer", "prompt"))
    means = activation_means(model, tok, prompts, batch_size=2)
    for kind, got in means.items():
        rows = []
        for n, item in enumerate(spec.retain_train):
            batch = collate_answers(tok, [prefix_for(tok, spec, "retain_train", item)],
                                    [item.answer + closing_for(spec.lead_for("retain_train", item))])
            with torch.no_grad(), capture(model, [mlp_hook_name(l) for l in range(info.num_layers)]) as cache:
                answer_logprobs(model, batch)
            acts = torch.stack([cache[mlp_hook_name(l)][0] for l in range(info.num_layers)], 1)  # (T, L, I)
            rows.append(acts[prompts.where[kind][n].bool()])
        expected = torch.cat(rows).mean(0)  # (L, I)
        assert got.shape == (info.num_layers, info.intermediate_size)
        assert torch.allclose(got, expected, atol=1e-5)


def test_mean_ablation_only_touches_the_given_rows_and_positions(tiny, spec):
    model, tok, info = tiny
    prompts = encode_prompts(tok, spec, "forget_train", spec.forget_train[:2])
    cache_inputs(model, tok, prompts, [1])
    means = torch.full((info.num_layers, info.intermediate_size), 3.0)
    every = torch.ones(info.intermediate_size, dtype=torch.bool)
    none = torch.zeros(info.intermediate_size, dtype=torch.bool)
    got = ablated_logprobs(model, tok, prompts, [{1: none}, {1: every}], "all", means)
    assert torch.allclose(got[0], prompts.base, atol=1e-5)  # row without units: clean
    assert (got[1] - prompts.base).abs().min() > 1e-3  # row with every unit: changed
    with pytest.raises(ValueError, match="not cached"):
        ablated_logprobs(model, tok, prompts, [{2: every}], "all", means)
    with pytest.raises(RuntimeError, match="boom"), \
            mean_ablation(model, {0: every[None]}, torch.ones(1, 4, dtype=torch.bool), means):
        raise RuntimeError("boom")
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_effects_are_the_concept_drop_and_the_neighbour_movement():
    from agmask.attribution.effects import EncodedPrompts

    forget = EncodedPrompts("f", [], [], {}, base=torch.tensor([-1.0, -2.0]))
    neighbours = EncodedPrompts("n", [], [], {}, base=torch.tensor([-1.0, -1.0, -1.0]))
    out = effects(forget, neighbours, torch.tensor([[-3.0, -4.0], [-1.0, -1.0]]),
                  torch.tensor([[-1.5, -0.5, -1.0], [-1.0, -1.0, -1.0]]))
    assert out[0].concept == pytest.approx(2.0) and out[0].neighbour == pytest.approx(1 / 3)
    assert out[1].concept == pytest.approx(-0.5) and out[1].neighbour == 0.0
    assert out[0].ratio(0.05) == pytest.approx(6.0) and out[1].ratio(0.05) == pytest.approx(-10.0)


def test_mean_neurons_at_every_position_equals_the_batched_measurement(tiny, spec):
    from agmask.attribution.ablation import mean_neurons, zero_neurons
    from agmask.scoring import item_logprobs

    model, tok, info = tiny
    retain = encode_prompts(tok, spec, "retain_train", spec.retain_train)
    means = activation_means(model, tok, retain)["all"]
    prompts = encode_prompts(tok, spec, "forget_train", spec.forget_train)
    cache_inputs(model, tok, prompts, [1])
    neurons = [(1, 3), (1, 50), (2, 7)]
    batched = ablated_logprobs(model, tok, prompts, [{1: _as_mask([3, 50], info.intermediate_size),
                                                     2: _as_mask([7], info.intermediate_size)}], "all", means)[0]
    one_alias = spec.model_copy(update={"answers": spec.answers[:1]})  # the batched path scores the first alias
    with mean_neurons(model, neurons, means):
        hooked = item_logprobs(model, tok, one_alias, "forget_train", spec.forget_train)
    with zero_neurons(model, neurons):
        zeroed = item_logprobs(model, tok, one_alias, "forget_train", spec.forget_train)
    assert torch.allclose(hooked, batched, atol=1e-4)
    assert not torch.allclose(hooked, zeroed, atol=1e-3)  # the mean is not zero
    assert all(not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("kind", ["all", "subject"])
def test_the_closing_quote_counts_as_any_token_that_closes_the_answer_as_every_scorer_does(spec, kind):
    from agmask.models import load
    from agmask.scoring import score_continuations

    model, tok, info = load("tiny:llama")  # a copy of its own: it gains the closing tokens a real BPE vocabulary has
    tok.add_tokens(['".', '."'])
    model.resize_token_embeddings(len(tok))
    items = spec.forget_train
    prompts = encode_prompts(tok, spec, "forget_train", items, kinds=(kind,))
    assert all(c is not None and len(c[1]) == 3 for c in prompts.closing)  # `"`, `".`, `."`
    cache_inputs(model, tok, prompts, [0, 2], batch_size=3)
    lead = spec.lead_for("forget_train", items[0])
    scored = [score_continuations(model, tok, prefix_for(tok, spec, "forget_train", it),
                                  [spec.answers_for(it)[0] + closing_for(lead)], close=closing_for(lead))[0].logprob
              for it in items]
    assert prompts.base.tolist() == pytest.approx(scored, abs=1e-4)
    bare = encode_prompts(tok, spec, "forget_train", items, kinds=(kind,))
    bare.closing = []  # the bare quote token alone: strictly less probability
    cache_inputs(model, tok, bare, [0])
    assert (prompts.base > bare.base).all()
    means = activation_means(model, tok, encode_prompts(tok, spec, "retain_train", spec.retain_train, (kind,)))[kind]
    units = {2: [5, 9, 30]}
    got = ablated_logprobs(model, tok, prompts, [{2: _as_mask(units[2], info.intermediate_size)}], kind, means)[0]
    direct = [_direct(model, tok, spec, "forget_train", it, units, means, kind) for it in items]
    assert got.tolist() == pytest.approx(direct, abs=1e-4)  # after the cached header too (subject)
