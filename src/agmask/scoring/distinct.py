"""Where an answer becomes its own: the first token it shares with no other answer the concept knows.

An answer's first token can be common to many answers: `The Beatles` starts like `The Rolling Stones`,
`The Who`, ... A first-token rank, or a first-token training term, on `The` measures and moves every band
that starts with it, not the concept. So the "first token" of an answer is its first *distinguishing*
token: the first token, after the lead, at which its tokenisation leaves every other known answer's (the
concept's candidates and its aliases, a concept-level list that holds no evaluation set). For most
answers it is the first token itself (offset 0); for `The Beatles` among `The ...` bands it is ` Beatles`
(offset 1). The shared tokens are scored as usual; the rank and the first-token terms are taken where
the answer becomes its own.

A first token that is one letter says no more: `Einstein` is `E|instein` to the default model's tokenizer, and
`E` starts thousands of names, listed or not (an adapter that answers "E. M. H. W. Heisenberg" keeps it at
rank 1). So for the rank, a one-letter distinguishing token followed by a longer piece of the answer gives way
to that piece. Training does not skip it (`initials=False`): the letter's probability is where the model can
give the answer up; with the letter in the prompt, the forget terms must push down a near-certain continuation
(`instein` after `E`), which on the training halves of a person and a landmark cost 2.7 and 12 times the
locality (docs/METHOD.md).
"""
from __future__ import annotations

from agmask.scoring.encode import common_prefix_len, tokens


def known_answers(spec) -> list[str]:
    """The concept's aliases and candidates, each once (case-insensitive), in file order."""
    seen, out = set(), []
    for answer in [*spec.answers, *spec.candidates]:
        if answer.casefold() not in seen:
            seen.add(answer.casefold())
            out.append(answer)
    return out


def others_than(spec, answer: str) -> list[str]:
    """The known answers that are not `answer` (nor, for one of the concept's aliases, any of its aliases)."""
    own = {a.casefold() for a in spec.answers} if spec.is_concept_answer(answer) else {answer.casefold()}
    return [a for a in known_answers(spec) if a.casefold() not in own]


def answer_tokens_and_offset(tokenizer, lead: str, answer: str, others: list[str], close: str = "",
                             initials: bool = True) -> tuple[list[int], int]:
    """`answer` (+ `close`)'s tokens after `lead` (tokenised together) and the index among them of its first
    distinguishing token: how many of its leading tokens also start one of `others` (0 when its first token is
    its own; at most its last token), plus one where that token is an initial and `initials` is true."""
    lead_ids = tokens(tokenizer, lead)
    mine = tokens(tokenizer, lead + answer + close)
    start = common_prefix_len(lead_ids, mine)
    own = mine[start:]
    shared = 0
    for other in others:
        theirs = tokens(tokenizer, lead + other + close)
        if common_prefix_len(lead_ids, theirs) == start:
            shared = max(shared, common_prefix_len(own, theirs[start:]))
    offset = min(shared, max(len(own) - 1, 0))
    if initials and _is_initial(tokenizer, own, offset, answer):
        offset += 1  # the answer's next token is where it becomes its own
    return own, offset


def _is_initial(tokenizer, own: list[int], at: int, answer: str) -> bool:
    """Is `own[at]` one letter followed by a longer piece of the answer (`E|instein`)? A tokenizer that spells
    the answer letter by letter (`E|u|l|er`) has no initials."""
    this, after = (tokenizer.decode(own[i: i + 1]).strip() for i in (at, at + 1))
    inside = len(tokenizer.decode(own[: at + 2]).strip()) <= len(answer.strip())
    return len(this) == 1 and this.isalpha() and len(after) > 1 and after[:2].isalpha() and inside


def distinguishing_offset(tokenizer, lead: str, answer: str, others: list[str], close: str = "") -> int:
    """The index, within `answer`'s tokens after `lead`, of its first distinguishing token (see
    `answer_tokens_and_offset`)."""
    return answer_tokens_and_offset(tokenizer, lead, answer, others, close)[1]
