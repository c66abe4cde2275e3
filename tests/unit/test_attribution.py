"""Attribution: exact per-sample gradients from one batched backward, score shapes, ranking invariants."""
from __future__ import annotations

import pytest
import torch

from agmask.attribution import SCORES, combined_score, contrastive, neuron_stats, rank_normalise, top_neurons
from agmask.attribution.ablation import jaccard, random_like, zero_neurons
from agmask.concepts import load_concept
from agmask.errors import StageError
from agmask.scoring import item_logprobs


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def test_batched_per_sample_scores_equal_a_per_prompt_loop(tiny, spec):
    model, tok, info = tiny
    items = spec.forget_train + spec.forget_eval  # different lengths: the batch is padded
    batched = neuron_stats(model, tok, spec, "forget_train", items, batch_size=8, keep_per_sample=True)
    single = neuron_stats(model, tok, spec, "forget_train", items, batch_size=1, keep_per_sample=True)
    for name in SCORES:
        a = torch.cat(batched.per_sample[name])  # (N, L, I)
        b = torch.cat(single.per_sample[name])
        assert a.shape == (len(items), info.num_layers, info.intermediate_size)
        assert (a - b).abs().max().item() < 1e-5 * max(1.0, b.abs().max().item())
    assert torch.allclose(batched.layer_sensitivity, single.layer_sensitivity, rtol=1e-5)


def test_scores_have_the_model_shape_and_are_non_negative(tiny, spec):
    model, tok, info = tiny
    stats = neuron_stats(model, tok, spec, "forget_train", spec.forget_train, batch_size=3)
    for name in SCORES:
        assert stats.mean(name).shape == (info.num_layers, info.intermediate_size)
        assert (stats.mean(name) >= 0).all() and stats.mean(name).sum() > 0
    assert stats.layer_sensitivity.shape == (info.num_layers,)
    assert stats.n == len(spec.forget_train)


def test_attribution_leaves_no_hooks_and_no_gradients(tiny, spec):
    model, tok, _ = tiny
    neuron_stats(model, tok, spec, "retain_train", spec.retain_train)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_empty_set_is_a_clean_error(tiny, spec):
    model, tok, _ = tiny
    with pytest.raises(StageError, match="prompt set forget_train is empty"):
        neuron_stats(model, tok, spec, "forget_train", [])


def test_rank_normalise_is_monotone_in_0_1_with_tied_averages():
    x = torch.tensor([[3.0, 1.0, 2.0], [2.0, 5.0, 0.0]])
    r = rank_normalise(x)
    assert r.shape == x.shape and r.min() == 0 and r.max() == 1
    order = torch.argsort(x.flatten())
    assert torch.all(r.flatten()[order].diff() >= 0)
    assert r[0, 2] == r[1, 0]  # the two 2.0s share a rank


def test_contrastive_prefers_forget_only_neurons_and_top_is_by_score_not_index():
    forget = torch.tensor([[0.1, 0.9, 0.8, 0.2]])
    retain = torch.tensor([[0.1, 0.9, 0.0, 0.2]])
    c = contrastive(forget, retain)
    assert int(c.argmax()) == 2  # high on forget, low on retain
    comb = combined_score({"saliency": forget, "fisher": forget}, {"saliency": retain, "fisher": retain})
    assert top_neurons(comb, 1)[0][:2] == (0, 2)
    scores = torch.tensor([[0.0, 5.0], [9.0, 1.0]])
    assert [t[:2] for t in top_neurons(scores, 2)] == [(1, 0), (0, 1)]
    assert [t[:2] for t in top_neurons(scores, 2, layers=[0])] == [(0, 1), (0, 0)]


def test_zeroing_neurons_is_scoped_and_changes_the_answer(tiny, spec):
    model, tok, info = tiny
    items = spec.forget_eval
    before = item_logprobs(model, tok, spec, "forget_eval", items)
    with zero_neurons(model, [(l, u) for l in range(info.num_layers) for u in range(info.intermediate_size)]):
        zeroed = item_logprobs(model, tok, spec, "forget_eval", items)
    after = item_logprobs(model, tok, spec, "forget_eval", items)
    assert not torch.allclose(before, zeroed)
    assert torch.equal(before, after)


def test_random_like_matches_layers_and_avoids_the_top():
    top = [(0, 1), (0, 2), (2, 5)]
    rand = random_like(top, 10, torch.Generator().manual_seed(0))
    assert sorted(l for l, _ in rand) == [0, 0, 2]
    assert not set(rand) & set(top)
    assert jaccard(top, top) == 1.0 and jaccard(top, rand) == 0.0


def test_every_alias_attributes_one_sample_per_prompt_and_alias(tiny, spec):
    """With all_aliases, the scores are the mean over (prompt, alias) samples: the per-alias runs, weighted."""
    model, tok, _ = tiny
    items = spec.forget_train[:3]
    assert len(spec.answers) == 2 and not any(it.answer for it in items)
    both = neuron_stats(model, tok, spec, "forget_train", items, batch_size=4, all_aliases=True)
    first = neuron_stats(model, tok, spec, "forget_train", items, batch_size=4)
    second = neuron_stats(model, tok, spec.model_copy(update={"answers": spec.answers[::-1]}), "forget_train", items,
                          batch_size=4)
    assert both.n == 2 * len(items) and first.n == len(items)
    for name in SCORES:
        expected = (first.mean(name) + second.mean(name)) / 2
        assert torch.allclose(both.mean(name), expected, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(first.mean(name), second.mean(name))  # the second alias is attributed differently
