"""Masked LoRA on PEFT: the update is exactly zero outside the mask, the base never changes, adapters round-trip."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import PeftModel

from agmask.errors import StageError
from agmask.lora import attach_lora, load_adapter, merged_delta, save_adapter, trainable_parameters
from agmask.models import load
from agmask.models.arch import mlp_module

R = 8  # != hidden (48) != intermediate (80): a transposed mask cannot pass


def _mask(info, layers=(0, 2), per_layer=7, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
    for layer in layers:
        mask[layer, torch.randperm(info.intermediate_size, generator=g)[:per_layer]] = True
    return mask


def _train(adapter, tok, steps=6, lr=5e-2):
    """A few AdamW steps with weight decay and clipping on a loss that moves every LoRA weight."""
    params = trainable_parameters(adapter)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    ids = torch.tensor([tok("train the adapter on this text")["input_ids"]] * 2)
    for _ in range(steps):
        loss = adapter.model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("spec", ["tiny:llama", "tiny:qwen2"])
def test_delta_is_exactly_zero_outside_the_mask_and_base_is_untouched(spec):
    model, tok, info = load(spec)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    mask = _mask(info)
    adapter = attach_lora(model, mask, r=R)
    _train(adapter, tok)
    for layer in range(info.num_layers):
        if layer not in adapter.layers:
            continue
        keep = mask[layer]
        for which in ("gate", "up"):
            delta = merged_delta(adapter.model, layer, which)  # (I, H)
            assert delta.shape == (info.intermediate_size, info.hidden_size)
            assert torch.count_nonzero(delta[~keep]) == 0
            assert torch.equal(delta.abs().sum(1) > 0, keep)  # non-zero rows == the mask
        delta = merged_delta(adapter.model, layer, "down")  # (H, I)
        assert delta.shape == (info.hidden_size, info.intermediate_size)
        assert torch.count_nonzero(delta[:, ~keep]) == 0
        assert torch.equal(delta.abs().sum(0) > 0, keep)  # non-zero columns == the mask
    # PEFT renames wrapped weights to `...base_layer.weight`; every base tensor is bit-identical
    base_now = {k.replace("base_layer.", ""): v for k, v in adapter.model.get_base_model().state_dict().items()
                if "lora_" not in k}
    assert base_now.keys() == base_state.keys()
    assert all(torch.equal(base_now[k], v) for k, v in base_state.items())


def test_only_lora_weights_train():
    model, tok, info = load("tiny:llama")
    adapter = attach_lora(model, _mask(info), r=R)
    names = [n for n, p in adapter.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert len(names) == 2 * 3 * len(adapter.layers)


def test_zero_mask_is_the_identity_even_after_training():
    model, tok, info = load("tiny:qwen2")
    ids = torch.tensor([tok("identity check")["input_ids"]])
    before = model(ids).logits.detach().clone()
    adapter = attach_lora(model, torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool), layers=[1],
                          r=R)
    _train(adapter, tok)
    assert torch.equal(adapter.model(ids).logits, before)


def test_empty_mask_without_layers_is_a_clean_error():
    model, _, info = load("tiny:llama")
    with pytest.raises(StageError, match="selects no neuron"):
        attach_lora(model, torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool))


def test_disable_and_unload_restore_the_base_bit_identically():
    model, tok, info = load("tiny:llama")
    ids = torch.tensor([tok("restore me")["input_ids"]])
    base = model(ids).logits.detach().clone()
    adapter = attach_lora(model, _mask(info), r=R)
    _train(adapter, tok)
    assert not torch.equal(adapter.model(ids).logits, base)
    with adapter.model.disable_adapter():
        assert torch.equal(adapter.model(ids).logits, base)
    restored = adapter.model.unload()
    assert torch.equal(restored(ids).logits, base)


def test_fresh_process_peft_load_reproduces_the_trained_logits(tmp_path):
    model, tok, info = load("tiny:qwen2")
    adapter = attach_lora(model, _mask(info), r=R)
    _train(adapter, tok)
    ids = tok("reload me")["input_ids"]
    expected = adapter.model(torch.tensor([ids])).logits.detach()
    save_adapter(adapter, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                                  "mask.safetensors"}
    base_dir = tmp_path / "base"
    load("tiny:qwen2")[0].save_pretrained(base_dir)
    script = textwrap.dedent(f"""
        import json, sys, torch
        from transformers import AutoModelForCausalLM
        from peft import PeftModel
        base = AutoModelForCausalLM.from_pretrained({str(base_dir)!r}, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, {str(tmp_path / 'adapter')!r}).eval()
        print(json.dumps(model(torch.tensor([{ids}])).logits.flatten().tolist()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    got = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1])).reshape(expected.shape)
    assert torch.allclose(got, expected, atol=1e-6)


def test_gradient_masks_are_reapplied_after_loading_for_training(tmp_path):
    model, tok, info = load("tiny:llama")
    mask = _mask(info)
    adapter = attach_lora(model, mask, r=R)
    _train(adapter, tok)
    save_adapter(adapter, tmp_path / "a")
    fresh, _, _ = load("tiny:llama")
    reloaded = load_adapter(fresh, tmp_path / "a", trainable=True)
    assert torch.equal(reloaded.mask, mask) and reloaded.layers == adapter.layers
    _train(reloaded, tok)  # further training (e.g. a relearning attack) keeps the mask
    for layer in reloaded.layers:
        assert torch.count_nonzero(merged_delta(reloaded.model, layer, "gate")[~mask[layer]]) == 0
        assert torch.count_nonzero(merged_delta(reloaded.model, layer, "down")[:, ~mask[layer]]) == 0
    frozen = load_adapter(load("tiny:llama")[0], tmp_path / "a")
    assert not any(p.requires_grad for p in frozen.model.parameters())


def test_stacked_adapters_freeze_the_earlier_one(tmp_path):
    model, tok, info = load("tiny:qwen2")
    first = attach_lora(model, _mask(info, layers=(0,)), r=R, name="first")
    _train(first, tok)
    snapshot = {n: p.detach().clone() for n, p in first.model.named_parameters() if ".first." in n}
    second = attach_lora(first.model, _mask(info, layers=(1, 2), seed=1), r=R, name="second")
    assert second.model is first.model
    assert all(".second." in n for n, p in second.model.named_parameters() if p.requires_grad)
    _train(second, tok)
    for n, p in second.model.named_parameters():
        if ".first." in n:
            assert torch.equal(p, snapshot[n])
    assert set(second.model.active_adapters) == {"first", "second"}


def _lora_hooks(model) -> int:
    """Gradient hooks registered on LoRA parameters."""
    return sum(len(p._backward_hooks or {}) for n, p in model.named_parameters() if "lora_" in n)


def test_masked_lora_removes_its_hooks_on_exit_even_after_an_exception():
    from agmask.lora import gradient_masks, masked_lora

    model, tok, info = load("tiny:llama")
    with pytest.raises(RuntimeError), masked_lora(model, _mask(info), r=R) as adapter:
        assert _lora_hooks(adapter.model) == 6  # gate/up/down of 2 layers
        raise RuntimeError("training failed")
    assert _lora_hooks(adapter.model) == 0 and adapter.handles == []
    with gradient_masks(adapter.model, "default", adapter.mask, adapter.layers) as handles:
        assert len(handles) == 6 and _lora_hooks(adapter.model) == 6
    assert _lora_hooks(adapter.model) == 0


def test_a_nan_gradient_outside_the_mask_does_not_leak_in():
    model, tok, info = load("tiny:llama")
    mask = _mask(info)
    with attach_lora(model, mask, r=R) as adapter:
        b = mlp_module(adapter.model, 0, "gate").lora_B["default"].weight  # (I, r): rows outside the mask
        b.grad = None
        grad = torch.full_like(b, float("nan"))
        grad[mask[0]] = 1.0
        b.backward(grad)
        assert torch.equal(b.grad[~mask[0]], torch.zeros_like(b.grad[~mask[0]]))  # 0, not NaN
        assert torch.equal(b.grad[mask[0]], torch.ones_like(b.grad[mask[0]]))


def test_save_refuses_an_adapter_with_a_delta_outside_its_mask(tmp_path):
    from agmask.lora import delta_outside_mask

    model, tok, info = load("tiny:llama")
    mask = _mask(info)
    adapter = attach_lora(model, mask, r=R)
    adapter.remove_hooks()  # trained without its gradient masks: the delta leaks
    _train(adapter, tok, steps=2)
    assert delta_outside_mask(adapter) > 0
    with pytest.raises(StageError, match="merged delta outside the mask is"):
        save_adapter(adapter, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_saved_adapter_files_do_not_depend_on_the_process(tmp_path):
    """adapter_config.json lists target_modules sorted: the same adapter saved in two processes (different
    set orders) gives the same bytes, so its hash, and the evaluation's input hash, stay the same."""
    script = textwrap.dedent(f"""
        import torch
        from agmask.lora import attach_lora, save_adapter
        from agmask.models import load
        model, tok, info = load("tiny:llama")
        mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
        mask[:, :5] = True
        save_adapter(attach_lora(model, mask, r=4), r"{{out}}")
    """)
    for i, seed in enumerate(("1", "2")):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", script.replace("{out}", str(tmp_path / str(i)))], check=True, env=env,
                       capture_output=True)
    a, b = ((tmp_path / i / "adapter_config.json").read_bytes() for i in ("0", "1"))
    assert a == b
    modules = json.loads(a)["target_modules"]
    assert modules == sorted(modules) and len(modules) == 9


def test_load_takes_layers_from_the_mask_file_and_refuses_a_missing_mask(tmp_path):
    model, tok, info = load("tiny:llama")
    mask = _mask(info)
    save_adapter(attach_lora(model, mask, r=R), tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    config["target_modules"] = r".*\.mlp\.(gate|up|down)_proj"  # a regex string, as other tools write it
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    with load_adapter(load("tiny:llama")[0], tmp_path / "a", trainable=True) as reloaded:
        assert reloaded.layers == [0, 2] and len(reloaded.handles) == 6  # masked, with hooks
    assert reloaded.handles == []
    (tmp_path / "a" / "mask.safetensors").unlink()
    with pytest.raises(StageError, match="mask.safetensors is missing"):
        load_adapter(load("tiny:llama")[0], tmp_path / "a")
