"""Shared fixtures. Nothing here touches the network; AGMASK_HOME is a temp dir per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from runkit import one_torch_thread

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
    """One torch thread for every test but the slow ones (the real model keeps every core). Fixtures of a
    wider scope are set up before this one: those on tiny models use `one_torch_thread` themselves."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_concept_path() -> Path:
    return TINY_CONCEPT


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory, tiny_concept_path):
    """ONE finished tiny run (tiny:llama, every stage, `runkit.FAST`), made by `agmask run` so its DONE markers
    record that command, shared by every test that reads a finished run: (its RunConfig, the command line).

    A test that changes a run works on a copy (`runkit.copy_run`); the teardown checks that no test changed
    this one (every file's sha256)."""
    from runkit import cli_finished_run, snapshot

    with one_torch_thread():
        run = cli_finished_run(tmp_path_factory.mktemp("finished"), tiny_concept_path)
    before = snapshot(run.cfg.run_dir)
    yield run
    assert snapshot(run.cfg.run_dir) == before, "a test changed the shared finished run: copy it first (copy_run)"


@pytest.fixture(params=TINY_MODELS)
def tiny(request):
    """(model, tokenizer, info) for each tiny architecture."""
    from agmask.models import load

    return load(request.param)

