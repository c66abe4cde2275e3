"""A concept with its evaluation sets locked: what every selection (tuning, lambda choice) reads.

Hyper-parameters are chosen on the training sets only (DESIGN.md). `training_view(spec)` makes that
hold by construction: the view answers everything a training run or a train-half measurement needs
(the training sets, leads, answers, candidates, kind), and touching an evaluation set, or anything
that would carry one (a dump, a copy that puts one back), raises a one-line `ConceptError`.
"""
from __future__ import annotations

from agmask.concepts.schema import EVAL_SETS, TRAIN_SETS, ConceptSpec, PromptItem
from agmask.errors import ConceptError

# what a selection may read besides the training sets themselves
_ALLOWED = ("name", "answers", "forget_target", "kind", "lead", "candidates", "lead_for", "answers_for",
            "is_concept_answer", "training_appearance", "concept_candidates")


class TrainingView:
    """Read-only proxy of a `ConceptSpec` without its evaluation sets (see the module docstring)."""

    __slots__ = ("_spec",)

    def __init__(self, spec: ConceptSpec):
        object.__setattr__(self, "_spec", spec._spec if isinstance(spec, TrainingView) else spec)

    def _refuse(self, what: str) -> ConceptError:
        return ConceptError(f"concept {self._spec.name!r}: {what} is not available to a selection, which reads the "
                            f"training sets only ({', '.join(TRAIN_SETS)}); measure evaluation sets after choosing")

    def __getattr__(self, name: str):
        if name in TRAIN_SETS or name in _ALLOWED:
            return getattr(self._spec, name)
        if name in EVAL_SETS:
            raise self._refuse(f"the evaluation set {name}")
        raise self._refuse(f"{name!r}")

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError("a training view is read-only")

    def items(self, set_name: str) -> list[PromptItem]:
        if set_name in EVAL_SETS:
            raise self._refuse(f"the evaluation set {set_name}")
        return self._spec.items(set_name)

    def model_copy(self, update: dict | None = None, deep: bool = False) -> "TrainingView":
        """A copy with some fields replaced (e.g. a training half), still a training view."""
        touched = sorted(set(update or {}) & set(EVAL_SETS))
        if touched:
            raise self._refuse(f"replacing {', '.join(touched)}")
        return TrainingView(self._spec.model_copy(update=update, deep=deep))

    def __repr__(self) -> str:
        return f"TrainingView({self._spec.name!r})"


def training_view(spec: ConceptSpec | TrainingView) -> TrainingView:
    """`spec` with its evaluation sets locked (a view of a view is the same view)."""
    return TrainingView(spec)
