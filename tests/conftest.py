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


@pytest.fixture(scope="session")
def tiny_concept_path() -> Path:
    return TINY_CONCEPT


@pytest.fixture(params=TINY_MODELS)
def tiny(request):
    """(model, tokenizer, info) for each tiny architecture."""
    from agmask.models import load

    return load(request.param)


def pytest_configure(config):
    # Tiny models do microsecond-sized matmuls: one thread avoids thread start/spin costs. Slow tests
    # (real models) get every core back in their own fixture.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _threads_for_real_models(request):
    import torch

    if request.node.get_closest_marker("slow"):
        previous = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        yield
        torch.set_num_threads(previous)
    else:
        yield
