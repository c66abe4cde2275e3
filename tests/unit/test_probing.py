"""Activation capture: shapes and names match the model, hooks never outlive the context, gradients are exact."""
from __future__ import annotations

import pytest
import torch

from agmask.errors import StageError
from agmask.models.arch import decoder_layers, mlp_module
from agmask.probing import capture, hook_names, mlp_hook_name, resid_hook_name


def _hook_count(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_shapes_match_the_model(tiny):
    model, tok, info = tiny
    ids = torch.tensor([tok("a short prompt")["input_ids"]] * 2)
    with capture(model, hook_names(model)) as cache:
        model(ids)
    assert set(cache) == set(hook_names(model))
    for i in range(info.num_layers):
        assert cache[mlp_hook_name(i)].shape == (2, ids.shape[1], info.intermediate_size)
        assert cache[resid_hook_name(i)].shape == (2, ids.shape[1], info.hidden_size)
        assert not cache[mlp_hook_name(i)].requires_grad


def test_mlp_hook_is_the_down_proj_input(tiny):
    model, tok, _ = tiny
    ids = torch.tensor([tok("check the index space")["input_ids"]])
    layer_mlp = decoder_layers(model)[1].mlp
    seen = {}
    def remember(module, args, output):
        seen["in"] = args[0].detach()

    handle = layer_mlp.down_proj.register_forward_hook(remember)
    try:
        with capture(model, [mlp_hook_name(1)]) as cache:
            model(ids)
    finally:
        handle.remove()
    assert torch.equal(cache[mlp_hook_name(1)], seen["in"])


def test_no_hooks_remain_after_an_exception(tiny):
    model, tok, _ = tiny
    before = _hook_count(model)
    with pytest.raises(RuntimeError, match="inside"):
        with capture(model, hook_names(model)):
            assert _hook_count(model) > before
            raise RuntimeError("inside")
    assert _hook_count(model) == before


def test_unknown_layers_and_names_are_clean_errors(tiny):
    model, _, info = tiny
    with pytest.raises(StageError, match="unknown layer"):
        hook_names(model, layers=[info.num_layers])
    with pytest.raises(StageError, match="unknown hook name"):
        with capture(model, ["blocks.0.attn.hook_k"]):
            pass
    with pytest.raises(StageError, match="unknown layer 99"):
        with capture(model, [mlp_hook_name(99)]):
            pass
    assert _hook_count(model) == 0


def test_capture_does_not_change_outputs(tiny):
    model, tok, _ = tiny
    ids = torch.tensor([tok("same output")["input_ids"]])
    plain = model(ids).logits
    with capture(model, hook_names(model)):
        hooked = model(ids).logits
    with torch.enable_grad(), capture(model, hook_names(model, kinds=("mlp",)), keep_grad=True):
        graded = model(ids).logits
    assert torch.equal(plain, hooked) and torch.equal(plain, graded.detach())


def test_keep_grad_gives_the_full_gradient_of_every_layer(tiny):
    """The leaf trick (graph starts at the first hooked layer) must equal autograd through the whole model."""
    model, tok, info = tiny
    ids = torch.tensor([tok("gradients please")["input_ids"]])
    names = hook_names(model, kinds=("mlp",))
    with torch.enable_grad(), capture(model, names, keep_grad=True) as cache:
        model(ids).logits[0, -1, 5].backward()
    grads = {n: cache[n].grad.clone() for n in names}
    # reference: perturb layer 0's activation and compare with a finite difference
    eps = 1e-2  # RMSNorm computes in fp32 whatever the dtype: a smaller step drowns in rounding
    unit = (0, 2, 7)
    def bumped(delta):
        def hook(m, args):
            a = args[0].clone()
            a[unit] += delta
            return (a,)
        h = mlp_module(model, 0, "down").register_forward_pre_hook(hook)
        try:
            return model(ids).logits[0, -1, 5].item()
        finally:
            h.remove()
    fd = (bumped(eps) - bumped(-eps)) / (2 * eps)
    assert grads[names[0]][unit].item() == pytest.approx(fd, rel=1e-2, abs=1e-4)
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_probe_stage_activations_equal_a_plain_forward_from_the_cache(tiny, tiny_concept_path):
    """The probe stage runs each prompt from its last prompt token on (the rest from a prefix cache): its
    `last` and `answer` activations are those of one plain forward of the whole prompt + answer."""
    from agmask.concepts import load_concept
    from agmask.scoring import PrefixKV, prefix_for
    from agmask.scoring.encode import encode_answer
    from agmask.scoring.logprobs import hidden_states
    from agmask.stages.probe import probe_set

    model, tok, _ = tiny
    spec = load_concept(str(tiny_concept_path)).spec
    items = spec.neighbors
    kv = PrefixKV()
    probe_set(model, tok, spec, "forget_eval", spec.forget_eval[:2], kv)  # something cached before
    got = probe_set(model, tok, spec, "neighbors", items, kv)
    names = [resid_hook_name(i) for i in range(model.config.num_hidden_layers)]
    for n, item in enumerate(items):
        enc = encode_answer(tok, prefix_for(tok, spec, "neighbors", item), item.answer)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad(), capture(model, names) as cache:
            hidden_states(model, ids, torch.ones_like(ids))
        acts = torch.stack([cache[name][0] for name in names])  # (L, T, H)
        last = enc.answer_start - 1
        assert torch.allclose(got["neighbors.last.resid"][n].float(), acts[:, last], rtol=1e-2, atol=1e-2)
        answer = acts[:, last + 1 :].mean(1)  # (L, H) mean over the answer tokens
        assert torch.allclose(got["neighbors.answer.resid"][n].float(), answer, rtol=1e-2, atol=1e-2)
