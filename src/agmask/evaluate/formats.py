"""Answer formats training never used: the evaluation sets asked again in another shape.

Training (and so the adapter) sees each prompt after the answer leads of the training sets (e.g.
`The movie is "`, `The answer is "`). Forgetting that holds only after those leads is a formatting
habit, not forgotten knowledge. Two other shapes:

- `lead=<text>`: every item's lead replaced by `<text>` (default `Answer: `); a lead that any training
  item uses is left out, and the metric says so.
- `letter`: a lettered multiple-choice question, "<question>\\n\\nA) ...\\nB) ...\\n\\nAnswer with the letter.",
  whose reply starts right after the chat template; each option is scored by its letter's probability
  (softmax over the option letters). The options are the item's answer and `n - 1` distractors: other
  candidates when the answer is one, else other answers of the same set, in an order seeded by the item.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch.nn as nn

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.scoring import PrefixKV, render_prompt
from agmask.scoring.continuation import score_continuations
from agmask.unlearn.data import training_leads

LETTERS = "ABCDEFGH"
LETTER_INSTRUCTION = "Answer with the letter."
SET_LEAD = "set_lead"  # the format every set is scored in already (its own lead)
LETTER = "letter"


def unseen_leads(spec: ConceptSpec, wanted: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The leads of `wanted` that no training item uses (compared without case and outer spaces), and the
    others with the reason they were left out."""
    used = {lead.strip().casefold() for lead in training_leads(spec, spec.forget_train, spec.retain_train)}
    keep, skipped = [], {}
    for lead in wanted:
        if lead.strip().casefold() in used:
            skipped[lead] = "a training set uses this lead"
        elif lead not in keep:
            keep.append(lead)
    return keep, skipped


def with_lead(item: PromptItem, lead: str) -> PromptItem:
    """The item asked after `lead` (an item's own lead wins over its set's)."""
    return item.model_copy(update={"lead": lead})


@dataclass(frozen=True)
class LetterQuestion:
    prompt: str  # the question with its lettered options and the instruction
    options: tuple[str, ...]
    correct: int  # index of the item's answer in `options`


def letter_question(spec: ConceptSpec, set_name: str, index: int, item: PromptItem, n_options: int = 4) -> LetterQuestion:
    """The item as a lettered multiple-choice question (see the module docstring); deterministic per item."""
    aliases = spec.answers_for(item)
    folded = {a.casefold() for a in aliases}
    candidates = [c for c in spec.candidates if c.casefold() not in folded]
    if len(candidates) < len(spec.candidates):  # the answer is a candidate: the other candidates
        pool = candidates
    else:  # other answers of the same set, then candidates if the set has too few
        same_set = [a for a in dict.fromkeys(spec.answers_for(it)[0] for it in spec.items(set_name))
                    if a.casefold() not in folded]
        pool = same_set if len(same_set) >= n_options - 1 else list(dict.fromkeys(same_set + candidates))
    rng = random.Random(f"{set_name}:{index}:{item.prompt}")  # str seeds are stable across runs and processes
    options = rng.sample(pool, min(n_options - 1, len(pool))) + [aliases[0]]
    rng.shuffle(options)
    body = "\n".join(f"{letter}) {option}" for letter, option in zip(LETTERS, options))
    return LetterQuestion(f"{item.prompt}\n\n{body}\n\n{LETTER_INSTRUCTION}", tuple(options), options.index(aliases[0]))


def score_letter(model: nn.Module, tokenizer, question: LetterQuestion, set_name: str, index: int,
                 kv: PrefixKV | None = None) -> dict:
    """A score row in the shape of `ItemScore.to_dict()`: the answer is the correct letter, the multiple-choice
    view is the softmax over the option letters. kv: the model state's prefix cache (optional)."""
    letters = list(LETTERS[: len(question.options)])
    scores = score_continuations(model, tokenizer, render_prompt(tokenizer, question.prompt), letters, kv=kv)
    logprobs = [s.logprob for s in scores]
    top = max(logprobs)
    z = sum(math.exp(v - top) for v in logprobs)
    target = logprobs[question.correct]
    rank = 1 + sum(v > target for v in logprobs)
    return {"set": set_name, "index": index, "prompt": question.prompt, "answer": letters[question.correct],
            "answer_logprob": target, "first_token_rank": scores[question.correct].first_rank,
            "mc_share": math.exp(target - top) / z, "mc_rank": rank, "mc_top1": rank == 1,
            "mc_top": question.options[logprobs.index(top)]}
