"""The concept spec: a pydantic v2 model that rejects unknown keys.

A concept is what to forget (`answers`), what the model should say instead (`forget_target`),
and seven prompt sets with strict roles (see DESIGN.md): training sets never overlap evaluation sets.
Two optional sets hold open recommendation prompts where the concept is one plausible pick among
several (`recommend_train` counts as training, `recommend_eval` as evaluation); their prompts appear in
no other set, and their answer is always the concept among its `candidates`, after `I recommend "`.

Anchored and unseen neighbours. A neighbour whose answer *appears* in a training set is `anchored`
(the retain term, or the attack data, holds it in place); one whose answer appears in none is
`unseen`, the locality that counts. A text appears in a training set when, compared case-insensitively
with runs of whitespace as one space, it equals the answer of one of its items (an item without an
answer has the concept's answers) or occurs inside one of its prompts or passages as whole words
(not inside a longer word: `Tenet` does not appear in `tenets`). The training sets are
`forget_train`, `retain_train`, `relearn` and `recommend_train`. A neighbour may carry `family: anchored` or
`family: unseen` (the subset a demo evaluates is then spread over both); a tag that disagrees with
the rule is an error.
"""
from __future__ import annotations

import re
import warnings
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RECOMMEND_SETS = ("recommend_train", "recommend_eval")  # optional: empty in a concept file without them
SET_NAMES = ("forget_train", "forget_eval", "probes", "neighbors", "retain_train", "retain_eval", "relearn",
             *RECOMMEND_SETS)
TRAIN_SETS = ("forget_train", "retain_train", "relearn", "recommend_train")
EVAL_SETS = ("forget_eval", "probes", "neighbors", "retain_eval", "recommend_eval")
SetName = Literal["forget_train", "forget_eval", "probes", "neighbors", "retain_train", "retain_eval", "relearn",
                  "recommend_train", "recommend_eval"]
DEFAULT_LEAD = 'The answer is "'
# The reply to a recommendation prompt starts with the recommended title: the candidate distribution after
# this lead is the model's preference among the concept's `candidates`.
RECOMMEND_LEAD = 'I recommend "'
DEFAULT_KIND = "film"


class ConceptWarning(UserWarning):
    """A concept that can be used but measures less than it could (e.g. no unseen neighbour)."""


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
    kind: str = Field(DEFAULT_KIND, min_length=1, description="what the concept is, as a noun (film, book series, "
                      "person, ...): generated prompts name it so")
    lead: dict[SetName, str] = Field(default_factory=dict, description="answer lead per prompt set")
    candidates: list[str] = Field(min_length=2, description="titles for the multiple-choice view")
    forget_train: list[PromptItem] = Field(min_length=1)
    forget_eval: list[PromptItem] = Field(min_length=1)
    probes: list[PromptItem] = Field(min_length=1)
    neighbors: list[PromptItem] = Field(min_length=1)
    retain_train: list[PromptItem] = Field(min_length=1)
    retain_eval: list[PromptItem] = Field(min_length=1)
    relearn: list[PromptItem] = Field(min_length=1)
    recommend_train: list[PromptItem] = Field(default_factory=list, description=(
        "open recommendation prompts (genre, director, actor, mood, era; `family` tags the kind) where the concept "
        "is one plausible pick among the candidates: training only"))
    recommend_eval: list[PromptItem] = Field(default_factory=list, description=(
        "held-out recommendation prompts: how often the concept is recommended, and whether the other "
        "recommendations stay; evaluation only"))

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

    @field_validator("recommend_train", "recommend_eval")
    @classmethod
    def _concept_is_the_answer(cls, v: list[PromptItem]) -> list[PromptItem]:
        for i, item in enumerate(v):
            if item.answer is not None or item.facts:
                raise ValueError(f"item {i} ({item.prompt[:40]!r}): a recommendation item has no `answer` or `facts` "
                                 "(its answer is the concept, scored among the candidates); remove them")
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
        self._recommend_prompts_are_their_own()
        split = self.neighbor_split()
        for status, indices in split.items():  # a neighbour tagged with the other status is a mistake
            other = "unseen" if status == "anchored" else "anchored"
            for i in indices:
                if self.neighbors[i].family == other:
                    where = self.training_appearance(self.neighbors[i].answer or "")
                    why = f"appears in {where}" if where else "appears in no training set"
                    raise ValueError(f"neighbors[{i}] is tagged {other} but its answer "
                                     f"{self.neighbors[i].answer!r} {why}")
        if not split["unseen"]:
            warnings.warn(f"concept {self.name!r}: every neighbour's answer appears in a training set, so locality is "
                          "measured only where training holds the model in place; add neighbours whose answers appear "
                          "in no training set (unseen)", ConceptWarning, stacklevel=2)
        return self

    def _recommend_prompts_are_their_own(self) -> None:
        """A recommendation prompt appears in no other set (the train/eval check above covers the pair of them)."""
        where: dict[str, str] = {}
        for name in SET_NAMES:
            for item in getattr(self, name):
                key = _norm(item.prompt)
                other = where.setdefault(key, name)
                if other != name and (name in RECOMMEND_SETS or other in RECOMMEND_SETS):
                    raise ValueError(f"{name} prompt {item.prompt[:60]!r} also appears in {other} "
                                     "(recommendation sets share no prompt with any other set)")

    def items(self, set_name: str) -> list[PromptItem]:
        return list(getattr(self, set_name))

    def lead_for(self, set_name: str, item: PromptItem | str | None = None) -> str:
        """The answer lead of `item` (its own `lead` when it has one), else of the set."""
        if isinstance(item, PromptItem) and item.lead is not None:
            return item.lead
        return self.lead.get(set_name, RECOMMEND_LEAD if set_name in RECOMMEND_SETS else DEFAULT_LEAD)

    def answers_for(self, item: PromptItem) -> list[str]:
        """Aliases to score: the item's own answer, else the concept's answers (max over aliases)."""
        return [item.answer] if item.answer else list(self.answers)

    def is_concept_answer(self, answer: str) -> bool:
        return answer.casefold() in {a.casefold() for a in self.answers}

    def concept_candidates(self) -> list[int]:
        """Indices of the candidates that name the concept (its canonical answer, and any alias listed)."""
        return [i for i, c in enumerate(self.candidates) if self.is_concept_answer(c)]
    def training_appearance(self, text: str) -> str | None:
        """The first training set in which `text` appears (see the module docstring), or None."""
        needle = _norm(text)
        if not needle:
            return None
        pattern = re.compile(r"(?<!\w)" + re.escape(needle) + r"(?!\w)")
        for name in TRAIN_SETS:
            for item in getattr(self, name):
                if any(_norm(a) == needle for a in self.answers_for(item)) or pattern.search(_norm(item.prompt)):
                    return name
        return None

    def neighbor_split(self) -> dict[str, list[int]]:
        """Indices of `neighbors` by status: `anchored` (the answer appears in a training set) or `unseen`."""
        split: dict[str, list[int]] = {"anchored": [], "unseen": []}
        for i, item in enumerate(self.neighbors):
            split["unseen" if self.training_appearance(item.answer or "") is None else "anchored"].append(i)
        return split


NEIGHBOR_STATUSES = ("anchored", "unseen")


def _norm(text: str) -> str:
    """A prompt as the overlap check compares it: case, spacing and trailing punctuation ignored."""
    return " ".join(text.casefold().split()).rstrip(" ?!.:;,")
