"""What the GPU path relies on, checked on CPU: bf16 loading and training, gradient checkpointing that
changes memory but not the loss, and no checkpointing where attribution needs exact activation gradients."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from agmask.attribution import neuron_stats
from agmask.concepts import load_concept
from agmask.errors import StageError
from agmask.lora import attach_lora, merged_delta
from agmask.models import load
from agmask.models.arch import decoder_layers, mlp_module
from agmask.models.checkpointing import activation_checkpointing, is_active
from agmask.scoring import score_items
from agmask.stages.unlearn import Config
from agmask.unlearn import METHODS
from agmask.unlearn.trainer import train


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _mask(info) -> torch.Tensor:
    mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
    mask[1, :9] = True
    mask[2, 30:35] = True
    return mask


def _conf(**kw):
    return dataclasses.replace(Config(), **{"steps": 2, "batch_size": 2, "lr": 5e-2, **kw})


def test_bf16_loads_scores_and_trains_on_cpu(spec):
    model, tok, info = load("tiny:llama", dtype="bfloat16")
    assert info.dtype == "bfloat16" and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    rows = score_items(model, tok, spec, "forget_eval", spec.forget_eval[:2])
    assert all(math.isfinite(r.answer_logprob) for r in rows)
    mask = _mask(info)
    adapter = attach_lora(model, mask, layers=[1, 2], r=4)
    log = train(adapter, METHODS["masked_lora"], tok, spec, _conf())
    assert len(log) == 2 and all(math.isfinite(r["loss"]) for r in log)
    for layer in (1, 2):
        delta = merged_delta(adapter.model, layer, "up")
        assert torch.count_nonzero(delta[~mask[layer]]) == 0 and torch.count_nonzero(delta[mask[layer]]) > 0


@pytest.mark.parametrize("method", ["masked_lora", "rmu"])
def test_gradient_checkpointing_gives_the_same_losses_and_adapter(spec, method):
    runs = {}
    for checkpointing in (False, True):
        model, tok, info = load("tiny:llama")
        adapter = attach_lora(model, _mask(info), layers=[1, 2], r=4)
        rows = train(adapter, METHODS[method], tok, spec, _conf(steps=3), gradient_checkpointing=checkpointing)
        lora = {n: p.detach().clone() for n, p in adapter.model.named_parameters() if "lora_" in n}
        runs[checkpointing] = ([r["loss"] for r in rows], lora)
        assert not is_active(adapter.model)  # switched off again after training
        assert not any(layer.training for layer in decoder_layers(adapter.model))
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-6, abs=1e-7)
    for name, value in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], value, rtol=1e-5, atol=1e-7)


def test_checkpointing_recomputes_layers_in_the_backward(spec):
    model, tok, info = load("tiny:llama")
    adapter = attach_lora(model, _mask(info), layers=[0], r=4)
    calls = []
    handle = mlp_module(adapter.model, 2, "down").register_forward_pre_hook(lambda m, a: calls.append(1))
    ids = torch.tensor([tok("which film has a spinning top")["input_ids"]])
    counts = {}
    for checkpointing in (False, True):
        calls.clear()
        with activation_checkpointing(adapter.model, checkpointing), torch.enable_grad():
            assert is_active(adapter.model) == checkpointing
            adapter.model(input_ids=ids).logits.float().logsumexp(-1).sum().backward()
        counts[checkpointing] = len(calls)
    handle.remove()
    assert counts == {False: 1, True: 2}  # once in the forward; again in the backward when checkpointed


def test_attribution_refuses_to_run_under_checkpointing(tiny, spec):
    model, tok, _ = tiny
    with activation_checkpointing(model):
        with pytest.raises(StageError, match="exact activation gradients"):
            neuron_stats(model, tok, spec, "forget_train", spec.forget_train)
    assert neuron_stats(model, tok, spec, "forget_train", spec.forget_train).n == len(spec.forget_train)


def test_a_map_over_several_devices_puts_the_final_norm_and_lm_head_on_the_embedding_device():
    """device_map over several GPUs: the final norm and lm_head are placed with the embeddings, so their
    outputs land on the inputs' device without any hook (known answers; a one-device map is unchanged)."""
    from agmask.models import ends_on_input_device

    split = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.norm": 1, "lm_head": 1}
    assert ends_on_input_device(split, "model") == {**split, "model.norm": 0, "lm_head": 0}
    coarse = {"model.embed_tokens": "cuda:1", "model.layers": 0, "model.norm": 0, "lm_head": 0}
    assert ends_on_input_device(coarse, "model") == {**coarse, "model.norm": "cuda:1", "lm_head": "cuda:1"}
    assert ends_on_input_device({"": 0}, "model") == {"": 0}
    whole_body = {"model": 0, "lm_head": 1}  # the norm is covered by `model`: only lm_head moves
    assert ends_on_input_device(whole_body, "model") == {"model": 0, "lm_head": 0}


def test_loading_a_model_registers_no_hooks():
    model, _, _ = load("tiny:qwen2")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
