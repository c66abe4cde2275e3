"""The unconstrained attacks: every linear weight quantised, a fresh LoRA on the merged model; the model is
left exactly as it was."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

from agmask.concepts import load_concept
from agmask.evaluate import EvalConfig, EvalContext
from agmask.evaluate.attacks import NEAR_ZERO, NOT_RUN, attack_quantization_full
from agmask.evaluate.quantize import (QuantizationUnavailable, linear_targets, lora_layers, quantize_groupwise,
                                      quantize_rtn, quantizer_for, swapped_linears)
from agmask.evaluate.relearn import lm_train, pad_id, passage_ids
from agmask.evaluate.relearn_full import ATTACKER, attack_relearn_full, attacker_lora, control_sequences
from agmask.lora import attach_lora
from evalkit import add_adapter

CFG = EvalConfig(generation_tokens=8, free_generation_tokens=8, corpus_tokens=64, corpus_window=32, batch_size=4,
                 full_relearn_steps=(2, 4), relearn_batch=2, full_relearn_lr=5e-2, full_quant_schemes=("int4", "nf4"))


def test_groupwise_quantisation_has_one_scale_per_row_and_group():
    w = torch.tensor([[1.0, 7.0, 0.7, -0.33, 3.0], [2.0, -2.0, 0.0, 0.0, 0.0]])
    q = quantize_groupwise(w, 4, group=2)  # groups: cols (0, 1), (2, 3), (4,): 3 scales per row
    want = torch.cat([quantize_rtn(w[:, 0:2], 4), quantize_rtn(w[:, 2:4], 4), quantize_rtn(w[:, 4:5], 4)], dim=1)
    assert torch.equal(q, want)
    assert torch.allclose(q[0, 2:4], torch.tensor([0.7, -0.3]))  # scale 0.7 / 7 = 0.1: -0.33 -> -3 steps
    assert torch.allclose(q[0, :2], torch.tensor([1.0, 7.0]))  # scale 1: integers stay
    assert torch.equal(quantize_groupwise(w, 4, group=128), quantize_rtn(w, 4))  # one group = per channel


def test_quantizer_names():
    w = torch.randn(4, 300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(quantizer_for("int8")(w), quantize_rtn(w, 8))
    assert torch.equal(quantizer_for("int4_g128", group=128)(w), quantize_groupwise(w, 4, 128))
    with pytest.raises(ValueError, match="unknown"):
        quantizer_for("fp3")


def test_nf4_without_bitsandbytes_is_reported_not_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails, whatever is installed
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(QuantizationUnavailable, match="bitsandbytes"):
        quantizer_for("nf4")


def _linear_weights(model) -> list[torch.Tensor]:
    return [p for p, _ in linear_targets(model, "all")]


def test_full_quantisation_touches_every_linear_weight_and_restores_them(tiny):
    model, _, info = tiny
    adapted = add_adapter(model, [1], std=0.3)
    linears = [m for m in adapted.modules() if isinstance(m, nn.Linear)]
    internal = {id(m) for layer in lora_layers(adapted) for d in (layer.lora_A, layer.lora_B) for m in d.values()}
    expected = {id(m.weight) for m in linears if id(m) not in internal}  # lm_head and every projection
    assert len(expected) == 7 * info.num_layers + 1  # q, k, v, o, gate, up, down per layer, and lm_head
    originals = {id(p): p.data.clone() for p in _linear_weights(adapted)}
    ids = torch.randint(0, 200, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
        with adapted.disable_adapter():
            with swapped_linears(adapted, None, merged=True, scope="all") as stats:
                merged = adapted(input_ids=ids).logits  # fp32 merge alone: the adapted model
            assert stats["weights"] == len(expected) and stats["max_abs_error"] == 0.0
            with swapped_linears(adapted, lambda w: quantize_rtn(w, 4), merged=True, scope="all") as stats:
                touched = {id(p) for p in _linear_weights(adapted) if not torch.equal(p.data, originals[id(p)])}
                for p in _linear_weights(adapted):  # each on its per-row int4 grid
                    assert torch.equal(quantize_rtn(p.data, 4), p.data)
            base_again = adapted(input_ids=ids).logits
    assert touched == expected and stats["weights"] == len(expected)
    assert torch.allclose(merged, want, atol=1e-4)
    assert all(torch.equal(p.data, originals[id(p)]) for p in _linear_weights(adapted))  # bit for bit
    assert not torch.allclose(base_again, want, atol=1e-3)


@pytest.fixture
def masked(tiny, tiny_concept_path):
    """A masked adapter with random weights inside the mask (layers 1, 2), hooks removed, frozen."""
    model, tok, info = tiny
    mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
    mask[1, :7] = True
    mask[2, 40:45] = True
    adapter = attach_lora(model, mask, layers=[1, 2], r=4)
    gen = torch.Generator().manual_seed(0)  # not the global RNG: the weights must not depend on the tests run before
    with torch.no_grad():
        for n, p in adapter.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    from agmask.lora.masked import _lora_pair

    with torch.no_grad():  # keep the delta inside the mask
        for layer in (1, 2):
            for which in ("gate", "up"):
                _lora_pair(adapter.model, layer, which, "default")[1].mul_(mask[layer].float()[:, None])
            _lora_pair(adapter.model, layer, "down", "default")[0].mul_(mask[layer].float()[None, :])
    for h in adapter.handles:
        h.remove()
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    spec = load_concept(str(tiny_concept_path)).spec
    return adapter, tok, spec, mask


def _snapshot(model) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "types": {n: type(m) for n, m in model.named_modules()},
            "grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "active": list(model.base_model.active_adapters), "configs": list(model.peft_config)}


def _same(model, snap: dict, grads: bool = True) -> bool:
    now = _snapshot(model)
    return (now["types"] == snap["types"] and (now["grad"] == snap["grad"] or not grads)
            and now["active"] == snap["active"]
            and now["configs"] == snap["configs"] and now["state"].keys() == snap["state"].keys()
            and all(torch.equal(now["state"][k], v) for k, v in snap["state"].items()))


def test_the_unconstrained_attacker_changes_weights_outside_the_mask_and_everything_is_restored(masked):
    adapter, tok, spec, mask = masked
    model = adapter.model
    snap = _snapshot(model)
    ids = torch.tensor([tok("Christopher Nolan directed a film")["input_ids"]])
    with torch.no_grad():
        adapted_logits = model(input_ids=ids).logits
    with attacker_lora(model, r=4) as params:
        assert model.base_model.active_adapters == [ATTACKER]
        with torch.no_grad():  # fresh LoRA (B = 0) on the merged weights: the adapted model exactly
            assert torch.allclose(model(input_ids=ids).logits, adapted_logits, atol=1e-5)
        losses = lm_train(model, params, passage_ids(tok, [it.prompt for it in spec.relearn]), 4, 2, 5e-2,
                          pad_id(tok))
        assert losses[-1] < losses[0]
        deltas = {n: m.get_delta_weight(ATTACKER) for n, m in model.named_modules()
                  if hasattr(m, "get_delta_weight") and ATTACKER in getattr(m, "lora_A", {})}
        gate1 = next(d for n, d in deltas.items() if n.endswith("layers.1.mlp.gate_proj"))
        assert torch.count_nonzero(gate1[~mask[1]]) > 0  # rows of neurons outside the mask move
        assert any(n.endswith("self_attn.q_proj") and torch.count_nonzero(d) for n, d in deltas.items())
        assert any(n.endswith("layers.0.mlp.down_proj") and torch.count_nonzero(d) for n, d in deltas.items())
        assert len(deltas) == 7 * 3  # every decoder Linear of the 3 layers
    assert _same(model, snap)


def test_the_attacker_restores_the_model_after_an_exception(masked):
    adapter, *_ = masked
    snap = _snapshot(adapter.model)
    with pytest.raises(RuntimeError, match="boom"), attacker_lora(adapter.model, r=4):
        raise RuntimeError("boom")
    assert _same(adapter.model, snap)


def test_control_text_has_the_relearn_passages_token_counts(masked):
    adapter, tok, spec, _ = masked
    relearn = passage_ids(tok, [it.prompt for it in spec.relearn])
    control = control_sequences(tok, relearn)
    assert [len(c) for c in control] == [len(r) for r in relearn]
    assert control[0] != relearn[0]
    special = tok("", add_special_tokens=True)["input_ids"]
    assert all(c[: len(special)] == special for c in control)


def test_relearn_full_metric_reports_each_checkpoint_of_both_runs(masked, tmp_path):
    adapter, tok, spec, _ = masked
    ctx = EvalContext(adapter.model, tok, spec, CFG, tmp_path, adapter=adapter)
    snap = _snapshot(adapter.model)
    out = attack_relearn_full(ctx)
    # requires_grad aside: PEFT's disable_adapter() (the base side of every score) re-enables it on exit
    assert _same(adapter.model, snap, grads=False)
    assert list(out["variants"]) == ["relearn k=2", "relearn k=4", "control k=2", "control k=4"]
    for name, v in out["variants"].items():
        assert v["mean_answer_logprob"]["unlearned"] == pytest.approx(
            sum(r["answer_logprob"] for r in ctx.scores("forget_eval", "adapted")) / 4)
        known = v["base_known"]
        assert set(known) == {"sets", "base", "unlearned", "attacked"}
        assert known["attacked"]["n"] == known["base"]["n"] == known["unlearned"]["n"]
        assert v["steps"] == int(name.split("k=")[1]) and v["data"] == name.split()[0]
    assert out["variants"]["relearn k=4"]["last_loss"] < out["variants"]["relearn k=2"]["first_loss"]
    assert out["trainable_parameters"] > 0


def test_quantization_full_metric_with_an_identity_adapter_and_without_bitsandbytes(tiny, tiny_concept_path, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    model, tok, info = tiny
    adapted = add_adapter(model, [1], std=0.0)  # base == unlearned: every fraction undefined
    spec = load_concept(str(tiny_concept_path)).spec
    out = attack_quantization_full(EvalContext(adapted, tok, spec, CFG, tmp_path))
    int4 = out["variants"]["int4"]
    assert int4["recovered_fraction"] is None and int4["flag"] == NEAR_ZERO
    assert int4["weights_quantized"] == len(linear_targets(adapted, "all"))
    assert int4["base_known"]["base"] == int4["base_known"]["unlearned"]
    nf4 = out["variants"]["nf4"]
    assert nf4["flag"] == NOT_RUN and "bitsandbytes" in nf4["not_run"]
