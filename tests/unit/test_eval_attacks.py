"""Quantisation attack mechanics and the recovered fraction, on known matrices and tiny models."""
from __future__ import annotations

import pytest
import torch

from agmask.evaluate.attacks import NEAR_ZERO, NOT_FORGOTTEN, attack_entry, recovered_fraction
from agmask.evaluate.quantize import lora_layers, quantize_rtn, swapped_weights
from evalkit import add_adapter


def test_weights_on_the_grid_round_trip_exactly():
    int8 = torch.tensor([[127.0, -64.0, 1.0, 0.0], [-127.0, 5.0, 0.0, 126.0]])
    assert torch.equal(quantize_rtn(int8, 8), int8)  # max |w| = 127 -> scale 1: integers stay
    int4 = torch.tensor([[7.0, -7.0, 3.0, 0.0]]) * 0.5
    assert torch.equal(quantize_rtn(int4, 4), int4)  # scale 0.5 (max 3.5 / 7): multiples of 0.5 stay


@pytest.mark.parametrize("bits", [8, 4])
def test_round_to_nearest_error_is_at_most_half_a_step_per_row(bits):
    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.01, 3, 16)[:, None]
    q = quantize_rtn(w, bits)
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(1, keepdim=True) / qmax  # (16, 1): one step per output channel
    assert torch.all((q - w).abs() <= scale / 2 + 1e-7)
    levels = (q / scale).round()
    assert torch.allclose(q / scale, levels, atol=1e-4)  # every value sits on its row's grid
    assert levels.abs().max() <= qmax
    assert all(len(torch.unique(levels[i])) <= 2 ** bits for i in range(16))


def test_zero_rows_stay_zero():
    assert torch.equal(quantize_rtn(torch.zeros(2, 3), 4), torch.zeros(2, 3))


def test_recovered_fraction_known_values_and_near_zero_denominator():
    assert recovered_fraction(base=-1.0, unlearned=-5.0, attacked=-3.0) == (0.5, None)
    assert recovered_fraction(-1.0, -5.0, -5.0) == (0.0, None)
    assert recovered_fraction(-1.0, -5.0, -1.0) == (1.0, None)
    assert recovered_fraction(-2.0, -2.05, -1.0) == (None, NEAR_ZERO)  # |base - unlearned| < 0.1 nats
    assert recovered_fraction(-2.05, -2.0, -1.0) == (None, NEAR_ZERO)
    assert recovered_fraction(-5.0, -1.0, -3.0) == (None, NOT_FORGOTTEN)  # the adapter raised the log-prob
    entry = attack_entry(-2.0, -2.0, -2.0, 0.1)
    assert entry["recovered_fraction"] is None and entry["flag"] == NEAR_ZERO


def test_swapped_weights_merge_matches_the_adapter_and_restores_exactly(tiny):
    model, _, _ = tiny
    adapted = add_adapter(model, [0, 2], std=0.3)
    ids = torch.randint(0, 200, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
        with adapted.disable_adapter():
            base = adapted(input_ids=ids).logits
            originals = [l.get_base_layer().weight.detach().clone() for l in lora_layers(adapted)]
            with swapped_weights(adapted, None, merged=True) as err:
                merged = adapted(input_ids=ids).logits  # adapter off, its delta merged into the weights
            assert err == 0.0
            with swapped_weights(adapted, 8, merged=False) as err8:
                assert err8 > 0
            after = adapted(input_ids=ids).logits
    assert len(lora_layers(adapted)) == 6
    assert not torch.allclose(want, base, atol=1e-3)  # the adapter changes outputs
    assert torch.allclose(merged, want, atol=1e-4)
    assert torch.equal(after, base)  # weights restored bit for bit
    assert all(torch.equal(o, l.get_base_layer().weight) for o, l in zip(originals, lora_layers(adapted)))


def test_swapped_weights_restore_after_an_exception(tiny):
    model, _, _ = tiny
    adapted = add_adapter(model, [1], std=0.3)
    before = [l.get_base_layer().weight.detach().clone() for l in lora_layers(adapted)]
    with pytest.raises(RuntimeError), adapted.disable_adapter(), swapped_weights(adapted, 4, merged=True):
        raise RuntimeError("boom")
    assert all(torch.equal(b, l.get_base_layer().weight) for b, l in zip(before, lora_layers(adapted)))


def _relearn_ctx(tiny, tiny_concept_path, mask):
    from agmask.concepts import load_concept
    from agmask.evaluate import EvalConfig, EvalContext
    from agmask.lora import attach_lora

    model, tok, info = tiny
    adapter = attach_lora(model, mask, layers=[1, 2], r=4)
    with torch.no_grad():  # a non-trivial "unlearned" adapter: random B rows inside the mask
        for n, p in adapter.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    for h in adapter.handles:
        h.remove()
    keep = mask if mask is not None else torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool)
    from agmask.lora.masked import _lora_pair

    with torch.no_grad():
        for layer in (1, 2):
            for which in ("gate", "up"):
                _lora_pair(adapter.model, layer, which, "default")[1].mul_(keep[layer].float()[:, None])
            _lora_pair(adapter.model, layer, "down", "default")[0].mul_(keep[layer].float()[None, :])
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    spec = load_concept(str(tiny_concept_path)).spec
    cfg = EvalConfig(relearn_steps=4, relearn_lr=5e-2, relearn_batch=2)
    return EvalContext(adapter.model, tok, spec, cfg, "/tmp/unused", adapter=adapter)


def test_relearn_attack_keeps_the_mask_and_restores_the_adapter(tiny, tiny_concept_path):
    from agmask.evaluate.relearn import attack_relearn, relearn_steps
    from agmask.lora import merged_delta

    _, _, info = tiny
    mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
    mask[1, :7] = True
    mask[2, 40:45] = True
    ctx = _relearn_ctx(tiny, tiny_concept_path, mask)
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if "lora_" in n}
    losses = relearn_steps(ctx, 4)
    assert len(losses) == 4 and losses[-1] < losses[0]  # the attacker does learn the passages
    for layer in (1, 2):  # ... but only inside the mask: the gradient masks were re-registered
        assert torch.count_nonzero(merged_delta(ctx.model, layer, "gate")[~mask[layer]]) == 0
        assert torch.count_nonzero(merged_delta(ctx.model, layer, "down")[:, ~mask[layer]]) == 0
    with torch.no_grad():
        for n, p in ctx.model.named_parameters():
            if n in before:
                p.copy_(before[n])
    result = attack_relearn(ctx)
    entry = result["variants"]["k=4"]
    assert entry["masked"] and entry["mean_answer_logprob"]["attacked"] is not None
    after = {n: p for n, p in ctx.model.named_parameters() if "lora_" in n}
    assert all(torch.equal(after[n], v) for n, v in before.items())  # restored exactly
    assert not any(p.requires_grad for p in ctx.model.parameters())
