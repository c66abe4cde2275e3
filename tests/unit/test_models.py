"""Model loading: tiny models, local directories, embedded packages (checksums, missing packages), errors."""
from __future__ import annotations

import pytest
import torch

from agmask.errors import ModelError
from agmask.models import identify, load
from agmask.models import embedded
from agmask.models.arch import decoder_layers, mlp_module
from agmask.models.registry import EMBEDDED, EmbeddedModel, PackagePart


@pytest.mark.parametrize("spec", ["tiny:llama", "tiny:qwen2"])
def test_tiny_models_are_deterministic_frozen_and_rectangular(spec):
    m1, tok, info = load(spec)
    m2, _, _ = load(spec)
    ids = torch.tensor([tok("hello world")["input_ids"]])
    assert torch.equal(m1(ids).logits, m2(ids).logits)
    assert info.hidden_size != info.intermediate_size  # so a transposed mask cannot pass a test
    assert not any(p.requires_grad for p in m1.parameters())
    assert not m1.training
    assert len(decoder_layers(m1)) == info.num_layers
    assert mlp_module(m1, 0, "down").in_features == info.intermediate_size
    assert info.sha256 == identify(spec)
    assert load(spec, seed=1)[2].sha256 != info.sha256


def test_local_directory_round_trip(tmp_path):
    model, tok, _ = load("tiny:qwen2")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, tok2, info = load(str(tmp_path / "m"))
    ids = torch.tensor([tok("a b c")["input_ids"]])
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert info.kind == "local" and info.sha256 == identify(str(tmp_path / "m"))
    assert tok2.chat_template == tok.chat_template


def test_corrupted_local_weights_give_a_clean_error(tmp_path):
    model, tok, _ = load("tiny:llama")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match="cannot load a model from"):
        load(str(tmp_path / "m"))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        load(str(tmp_path))


def test_unknown_specs():
    with pytest.raises(ModelError, match="unknown model 'gpt-nothing'"):
        load("gpt-nothing")
    with pytest.raises(ModelError, match="unknown embedded model 'nope'"):
        load("embedded:nope")
    with pytest.raises(ModelError, match="unknown tiny model"):
        load("tiny:gpt2")
    with pytest.raises(ModelError, match="does not exist"):
        load("/nonexistent/model.gguf")


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="cannot read GGUF file"):
        load(str(bad))


def test_hub_id_offline_says_so_and_suggests_a_directory(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="local directory"):
        load("someone/not-cached-model")


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package `agmask_fake_part1` holding data/part01.bin, and a registry entry for it."""
    pkg = tmp_path / "site" / "agmask_fake_part1"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "part01.bin").write_bytes(b"some bytes that are not the expected model")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = EmbeddedModel("fake", "test", "0" * 64, (PackagePart("agmask-fake-part1", "agmask_fake_part1",
                                                                   "data/part01.bin"),), "pip install agmask-fake-part1")
    monkeypatch.setitem(EMBEDDED, "fake", entry)
    return entry


def test_sha256_mismatch_is_refused_and_the_cache_is_untouched(fake_package):
    cache = embedded.cache_dir(fake_package)
    cache.mkdir(parents=True)
    (cache / "agmask-source.json").write_text('{"sha256": "an older build"}')
    (cache / "model.safetensors").write_bytes(b"old cache")
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    with pytest.raises(ModelError) as info:
        load("embedded:fake")
    message = str(info.value)
    assert "sha256 mismatch" in message and "0" * 64 in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
    assert not list((cache.parent.parent / "tmp").glob("*.gguf"))  # the joined temp file is gone


def test_missing_package_names_the_pip_command(monkeypatch):
    entry = EmbeddedModel("gone", "test", "0" * 64, (PackagePart("agmask-gone", "agmask_gone_pkg", "x.bin"),),
                          "pip install agmask-gone==1.0")
    monkeypatch.setitem(EMBEDDED, "gone", entry)
    with pytest.raises(ModelError, match=r"package agmask-gone is not installed; install it with: pip install agmask-gone==1.0"):
        load("embedded:gone")


def test_embedded_registry_points_at_installed_packages():
    for entry in EMBEDDED.values():
        assert embedded.installed(entry), entry.install


def test_check_model_refuses_before_loading(tmp_path):
    import json

    from agmask.models.check import check_model

    check_model("tiny:llama")
    for spec, needle in [("tiny:gpt2", "unknown tiny model"), ("./missing/dir", "model path ./missing/dir does not exist"),
                         ("gpt-nothing", "unknown model 'gpt-nothing'"), ("embedded:nope", "unknown embedded model")]:
        with pytest.raises(ModelError, match=needle):
            check_model(spec)
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="GGUF magic"):
        check_model(str(bad))
    model, tok, _ = load("tiny:llama")
    model.save_pretrained(tmp_path / "m")
    check_model(str(tmp_path / "m"))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ModelError, match="architecture 'gpt2' is not supported"):
        check_model(str(tmp_path / "m"))


def test_device_check(monkeypatch):
    from agmask.errors import AgmaskError
    from agmask.preflight import check_device

    check_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(AgmaskError, match=r"only 2 CUDA GPU\(s\) are visible"):
        check_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "auto"):
        with pytest.raises(AgmaskError, match="no CUDA GPU is visible"):
            check_device(device)
