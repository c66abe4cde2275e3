"""Prompt rendering and joint prompt+answer tokenisation: the one way every stage builds inputs.

The prompt is rendered with the model's chat template, the set's lead is appended (the start of the
assistant's reply, e.g. `The movie is "`), and prefix + answer are tokenised together. Tokens of the
prefix alone are usually a prefix of the joint tokens, but a BPE merge can cross the boundary; then
the answer span starts at the first token where the two differ, so the merged token is scored too.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

# 2: the answer's closing quote is scored as any token that closes it (`closing_token_ids`), not the bare quote
SCORING_VERSION = 2
QUOTES = {'"': '"', "“": "”", "'": "'", "«": "»"}
# punctuation a reply may put before the closing quote (`Max Planck."`): the quote still closes the answer
PUNCTUATION_BEFORE_CLOSE = ".,!?;:"
_CLOSING_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {close: ids}; a cache only


def render_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    """The user message rendered as the model's chat template, ending with the assistant header."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system + chr(10) if system else ''}Question: {prompt}\nAnswer: "  # base models without a template


def closing_for(lead: str) -> str:
    """A lead that opens a quote makes the closing quote part of the scored answer.

    With `The movie is "`, scoring `The Dark Knight"` (not `The Dark Knight`) keeps a title from
    getting the probability mass of every longer title it is a prefix of (`The Dark Knight Rises`).
    """
    stripped = lead.rstrip(" ")
    return QUOTES.get(stripped[-1], "") if stripped else ""


def closes_answer(piece: str, close: str) -> bool:
    """Does a token reading `piece` end an answer whose lead opened a quote that `close` ends? It does when it
    is the closing quote, alone or with what may follow it (`"`, `".`, `",`, `"\n`) or after punctuation
    (`."`, `,"`), and not when a letter or digit follows the quote (`'s`: the answer goes on)."""
    rest = piece.lstrip(PUNCTUATION_BEFORE_CLOSE)
    return bool(close) and rest.startswith(close) and not rest[len(close):][:1].isalnum()


def closing_token_ids(tokenizer, close: str) -> list[int]:
    """Every vocabulary token that ends the answer (`closes_answer`), sorted: the answer's last scored
    position counts them all, so that where the model writes `".` or `."` (single tokens to BPE) instead of a
    bare `"`, the answer still ends. Decoding the vocabulary takes about a second; it is cached per tokenizer."""
    per_close = _CLOSING_IDS.setdefault(tokenizer, {})
    if close not in per_close:
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        per_close[close] = [i for i, piece in enumerate(pieces) if closes_answer(piece, close)]
    return per_close[close]


def tokens(tokenizer, text: str) -> list[int]:
    # The chat template already holds any BOS token, so never add special tokens a second time.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class EncodedAnswer:
    input_ids: list[int]  # prefix + answer, tokenised jointly
    answer_start: int  # index of the first answer token (after any boundary merge)
    prefix_is_prefix: bool  # False when a merge crossed the prefix/answer boundary


def encode_answer(tokenizer, prefix: str, answer: str, prefix_ids: list[int] | None = None) -> EncodedAnswer:
    """Tokenise prefix + answer jointly and locate the answer span (DESIGN.md, "Scoring an answer")."""
    if not answer:
        raise ValueError("empty answer")
    prefix_ids = tokens(tokenizer, prefix) if prefix_ids is None else prefix_ids
    joint = tokens(tokenizer, prefix + answer)
    start = common_prefix_len(prefix_ids, joint)
    if start >= len(joint):
        raise ValueError(f"answer {answer!r} adds no tokens after the prefix")
    return EncodedAnswer(joint, start, start == len(prefix_ids))


@dataclass
class AnswerBatch:
    """Right-padded joint sequences for training and attribution (with gradients)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    target_mask: torch.Tensor  # (B, T) 1 where position t PREDICTS an answer token (t+1 is in the answer span)
    # Optional shortcut for training: the (B, T, H) residual stream entering layer `start_layer`,
    # precomputed once because the layers below it are frozen (see unlearn/trainer.py).
    start_layer: int = 0
    start_hidden: torch.Tensor | None = None
    # (row, position, ids): positions whose target closes the answer, scored as any of `ids` (closing_token_ids)
    closing: tuple[tuple[int, int, tuple[int, ...]], ...] = ()

    @property
    def targets(self) -> torch.Tensor:
        """(B, T) the token each position predicts; the last column is padding (never a target)."""
        return torch.cat([self.input_ids[:, 1:], torch.zeros_like(self.input_ids[:, :1])], dim=1)

    def to(self, device) -> "AnswerBatch":
        hidden = self.start_hidden.to(device) if self.start_hidden is not None else None
        return AnswerBatch(self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device),
                           self.start_layer, hidden, self.closing)


def collate_answers(tokenizer, prefixes: list[str], answers: list[str], closes: list[str] | None = None) -> AnswerBatch:
    """Build a right-padded batch of prefix+answer with a mask of the answer-predicting positions.

    closes: per answer, the closing quote it ends with ("" for none): where its last token is one that closes
    the answer, that position is scored as any closing token (`AnswerBatch.closing`, as `score_continuations`
    scores it)."""
    encoded = [encode_answer(tokenizer, p, a) for p, a in zip(prefixes, answers)]
    width = max(len(e.input_ids) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    tmask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        tmask[i, e.answer_start - 1 : n - 1] = 1  # position t predicts token t+1
    closing = []
    for i, (e, answer, close) in enumerate(zip(encoded, answers, closes or [""] * len(answers))):
        ids_closing = closing_token_ids(tokenizer, close) if close and answer.endswith(close) else []
        if e.input_ids[-1] in ids_closing and len(e.input_ids) - e.answer_start > 1:
            closing.append((i, len(e.input_ids) - 2, tuple(ids_closing)))
    return AnswerBatch(ids, attn, tmask, closing=tuple(closing))
