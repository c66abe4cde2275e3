"""Selection discipline by construction: a training view of a concept, and the bench selectors that use it
never read an evaluation set (a spec whose evaluation sets explode when read goes through them). `agmask tune`
has the same test in test_tune.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from agmask.concepts import EVAL_SETS, TRAIN_SETS, load_concept
from agmask.concepts.training_view import TrainingView, training_view
from agmask.errors import ConceptError

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Exploding(list):
    """An evaluation set that fails the test when anything reads it."""

    def _boom(self, *a, **k):
        raise AssertionError("an evaluation set was read on a selection path")

    __iter__ = __len__ = __getitem__ = __bool__ = __contains__ = _boom


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


@pytest.fixture
def poisoned(spec):
    return spec.model_copy(update={name: Exploding() for name in EVAL_SETS})


def test_the_view_gives_training_data_and_refuses_every_evaluation_set(spec):
    view = training_view(spec)
    for name in TRAIN_SETS:
        assert getattr(view, name) == getattr(spec, name) and view.items(name) == spec.items(name)
    assert view.candidates == spec.candidates and view.lead_for("forget_train") == spec.lead_for("forget_train")
    for name in EVAL_SETS:
        with pytest.raises(ConceptError, match=f"evaluation set {name} is not available to a selection"):
            getattr(view, name)
        with pytest.raises(ConceptError, match=name):
            view.items(name)
        with pytest.raises(ConceptError, match=f"replacing {name}"):
            view.model_copy(update={name: []})
    for leak in ("model_dump", "model_dump_json", "neighbor_split"):  # anything that would carry an evaluation set
        with pytest.raises(ConceptError, match="not available"):
            getattr(view, leak)
    half = view.model_copy(update={"forget_train": spec.forget_train[:2]})
    assert isinstance(half, TrainingView) and len(half.forget_train) == 2
    with pytest.raises(ConceptError):
        half.neighbors
    assert training_view(view)._spec is spec
    with pytest.raises(AttributeError):
        view.name = "x"


def test_the_ablation_lambda_choice_never_reads_an_evaluation_set(poisoned):
    from agmask.models import load

    model, tok, info = load("tiny:llama")
    lam, rows = _bench("ablation").select_retain_weight(model, tok, poisoned, [0.5, 1.0], k=10, draws=1, seed=0,
                                                        intermediate=info.intermediate_size)
    assert lam in (0.5, 1.0) and [r["retain_weight"] for r in rows] == [0.5, 1.0]


def test_the_poisoned_spec_does_explode_when_an_evaluation_set_is_read(poisoned):
    with pytest.raises(AssertionError, match="evaluation set was read"):
        list(poisoned.neighbors)
