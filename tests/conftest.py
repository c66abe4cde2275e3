"""Shared fixtures. Nothing here touches the network; AGMASK_HOME is a temp dir per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
TINY_CONCEPT = FIXTURES / "tiny_concept.yaml"
TINY_MODELS = ["tiny:llama", "tiny:qwen2"]


@pytest.fixture(autouse=True)
def agmask_home(tmp_path_factory, monkeypatch, request):
    """Each test gets its own empty AGMASK_HOME, except slow tests, which share one (the real model's cache)."""
    if request.node.get_closest_marker("slow"):
        home = tmp_path_factory.getbasetemp() / "shared-agmask-home"
        home = Path(os.environ.get("AGMASK_TEST_HOME", home))
    else:
        home = tmp_path_factory.mktemp("agmask-home")
    monkeypatch.setenv("AGMASK_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def torch_threads(request):
    """Tiny models on one thread: with other processes on the 2 cores, torch's thread pool makes a tiny
    forward ~50x slower (measured 0.39 s vs 0.0075 s). Slow tests on the real model keep every core."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_concept_path() -> Path:
    return TINY_CONCEPT


@pytest.fixture(params=TINY_MODELS)
def tiny(request):
    """(model, tokenizer, info) for each tiny architecture."""
    from agmask.models import load

    return load(request.param)

