"""The concept spec: a pydantic v2 model that rejects unknown keys.

A concept is what to forget (`answers`), what the model should say instead (`forget_target`),
and seven prompt sets with strict roles (see DESIGN.md): training sets never overlap evaluation sets.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SET_NAMES = ("forget_train", "forget_eval", "probes", "neighbors", "retain_train", "retain_eval", "relearn")
TRAIN_SETS = ("forget_train", "retain_train", "relearn")
EVAL_SETS = ("forget_eval", "probes", "neighbors", "retain_eval")
SetName = Literal["forget_train", "forget_eval", "probes", "neighbors", "retain_train", "retain_eval", "relearn"]
DEFAULT_LEAD = 'The answer is "'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)  # `answer: 56` is fine


class PromptItem(_Strict):
    prompt: str = Field(min_length=1, description="the user message (rendered with the model's chat template)")
    answer: str | None = Field(None, description="the expected answer; defaults to the concept's answers")
    facts: list[str] = Field(default_factory=list, description="facts a correct free-text answer contains")
    family: str | None = Field(None, description="perturbation family tag (wording, typo, casing, role play, ...)")
    lead: str | None = Field(None, description="this item's answer lead; default: the set's lead")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is blank")
        return v

    @field_validator("answer")
    @classmethod
    def _answer_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("answer is blank; leave it out to score the concept's own answers")
        return v


class ConceptSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="identifier, used in paths (adapters/<name>/)")
    answers: list[str] = Field(min_length=1, description="the concept's strings and aliases; the first is canonical")
    forget_target: str = Field("FORGOTTEN", min_length=1, description="what the unlearned model answers instead")
    lead: dict[SetName, str] = Field(default_factory=dict, description="answer lead per prompt set")
    candidates: list[str] = Field(min_length=2, description="titles for the multiple-choice view")
    forget_train: list[PromptItem] = Field(min_length=1)
    forget_eval: list[PromptItem] = Field(min_length=1)
    probes: list[PromptItem] = Field(min_length=1)
    neighbors: list[PromptItem] = Field(min_length=1)
    retain_train: list[PromptItem] = Field(min_length=1)
    retain_eval: list[PromptItem] = Field(min_length=1)
    relearn: list[PromptItem] = Field(min_length=1)

    @field_validator("answers", "candidates")
    @classmethod
    def _no_blank_strings(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("contains a blank string")
        if len({s.casefold() for s in v}) != len(v):
            raise ValueError("contains duplicates")
        return v

    @field_validator("neighbors", "retain_train", "retain_eval")
    @classmethod
    def _answers_required(cls, v: list[PromptItem]) -> list[PromptItem]:
        for i, item in enumerate(v):
            if not item.answer:
                raise ValueError(f"item {i} ({item.prompt[:40]!r}) needs an answer")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "ConceptSpec":
        if self.answers[0].casefold() not in {c.casefold() for c in self.candidates}:
            raise ValueError(f"candidates must include the concept's answer {self.answers[0]!r}")
        seen: dict[str, str] = {}
        for name in TRAIN_SETS:
            for item in getattr(self, name):
                seen.setdefault(_norm(item.prompt), name)
        for name in EVAL_SETS:
            for item in getattr(self, name):
                if _norm(item.prompt) in seen:
                    raise ValueError(f"{name} prompt {item.prompt[:60]!r} also appears in {seen[_norm(item.prompt)]} "
                                     "(training and evaluation sets must not overlap)")
        return self

    def items(self, set_name: str) -> list[PromptItem]:
        return list(getattr(self, set_name))

    def lead_for(self, set_name: str, item: PromptItem | str | None = None) -> str:
        """The answer lead of `item` (its own `lead` when it has one), else of the set."""
        if isinstance(item, PromptItem) and item.lead is not None:
            return item.lead
        return self.lead.get(set_name, DEFAULT_LEAD)

    def answers_for(self, item: PromptItem) -> list[str]:
        """Aliases to score: the item's own answer, else the concept's answers (max over aliases)."""
        return [item.answer] if item.answer else list(self.answers)

    def is_concept_answer(self, answer: str) -> bool:
        return answer.casefold() in {a.casefold() for a in self.answers}


def _norm(text: str) -> str:
    """A prompt as the overlap check compares it: case, spacing and trailing punctuation ignored."""
    return " ".join(text.casefold().split()).rstrip(" ?!.:;,")
