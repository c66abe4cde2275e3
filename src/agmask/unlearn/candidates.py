"""Recommendation prompts as a training source: candidate titles after the lead, with gradients (issue 17 item 4).

One `recommend_train` prompt is one packed sequence in the layout of `agmask.scoring.continuation`: the
chat-rendered prompt + the set's lead (`I recommend "`) once, then a trie of the titles' tokens (each
title + its closing quote), with an attention mask that lets a title's tokens see the prefix and their own
earlier tokens only. One forward gives every title's summed log-prob exactly as if it followed the prefix
alone (the evaluation's multiple-choice view, `scoring.candidate_logprobs`, computes the same numbers
without gradients), for about the tokens of two plain prompts rather than one sequence per title.
Prompts of a batch are right padded to the longest; a padded position attends to itself only and is
never read. With frozen layers cached, each prompt's input of the first adapted layer is computed once.

The titles are every candidate (the preference term needs the whole distribution) or, with that term
off, the concept's own title alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from agmask.scoring import prefix_for
from agmask.scoring.continuation import PackedContinuations, additive_mask, any_closing_token, pack_continuations
from agmask.scoring.encode import closing_for
from agmask.scoring.logprobs import decoder_and_head, hidden_states
from agmask.unlearn.data import input_of_layer
from agmask.unlearn.sources import Setup, Source

SET = "recommend_train"
DRAW = "recommend"


@dataclass(frozen=True)
class Titles:
    """The scored titles in column order, and where the concept sits among them."""

    names: list[str]
    concept: int  # the column of the concept's canonical answer (the forget term's target)
    drop: list[int]  # every column naming the concept (aliases listed as candidates too): out of the preference KL


def recommend_titles(spec, all_candidates: bool) -> Titles:
    """Every candidate (for the preference term), or the concept's canonical answer alone."""
    if not all_candidates:
        return Titles([spec.answers[0]], 0, [0])
    names = list(spec.candidates)
    # the schema ensures the canonical answer is a candidate
    concept = next(i for i, c in enumerate(names) if c.casefold() == spec.answers[0].casefold())
    return Titles(names, concept, spec.concept_candidates())


def pack_prompts(tokenizer, spec, items, titles: Titles, any_close: bool = False) -> list[PackedContinuations]:
    """Each item's prompt + lead with the titles (+ the lead's closing quote) as continuations; with `any_close`
    a title's closing quote is scored as any token that closes it (as the evaluation scores it)."""
    out = []
    for item in items:
        close = closing_for(spec.lead_for(SET, item))
        prefix = prefix_for(tokenizer, spec, SET, item)
        out.append(pack_continuations(tokenizer, prefix, [t + close for t in titles.names],
                                      close=close if any_close else ""))
    return out


@dataclass
class CandidateBatch:
    """B packed prompts of C titles each, right padded to N positions, with the index of every scored token."""

    input_ids: torch.Tensor  # (B, N), 0 on padding
    allowed: torch.Tensor  # (B, N, N) bool: position i may attend to position j (padding: itself only)
    position_ids: torch.Tensor  # (B, N)
    head_at: torch.Tensor  # (R, 2) (prompt, packed index) of every position that predicts a scored token, once each
    pick: torch.Tensor  # (P,) per scored token: its predicting position's row in head_at
    targets: torch.Tensor  # (P,) the token it predicts
    owner: torch.Tensor  # (P,) b * C + c: the prompt and title it belongs to
    first: torch.Tensor  # (B * C,) index in P of each title's first token
    num_titles: int
    # per set of closing tokens: (indices in P of the titles' closing tokens scored as any of them, those tokens)
    closing: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    start_layer: int = 0  # > 0: start_hidden (B, N, H) is the residual stream entering this layer
    start_hidden: torch.Tensor | None = None

    def to(self, device) -> "CandidateBatch":
        moved = {name: getattr(self, name).to(device) for name in
                 ("input_ids", "allowed", "position_ids", "head_at", "pick", "targets", "owner", "first")}
        hidden = self.start_hidden.to(device) if self.start_hidden is not None else None
        closing = tuple((ends.to(device), ids.to(device)) for ends, ids in self.closing)
        return CandidateBatch(**moved, num_titles=self.num_titles, closing=closing, start_layer=self.start_layer,
                              start_hidden=hidden)


def collate_packed(packs: list[PackedContinuations], device,
                   start: tuple[int, list[torch.Tensor]] | None = None) -> CandidateBatch:
    """A batch of packed prompts; with `start = (layer, per-prompt (N_i, H) inputs of that layer)` the frozen
    layers below `layer` are skipped."""
    width = max(len(p.ids) for p in packs)
    num_titles = len(packs[0].lengths)
    ids = torch.zeros(len(packs), width, dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(packs), 1, 1)
    positions = torch.zeros(len(packs), width, dtype=torch.long)
    head_at, pick, targets, owner, first = [], [], [], [], []
    ends: dict[tuple[int, ...], list[int]] = {}  # closing tokens -> indices in P scored as any of them
    for b, p in enumerate(packs):
        if p.ends:
            ends.setdefault(p.closing, []).extend(len(targets) + e for e in p.ends)
        n = len(p.ids)
        ids[b, :n] = torch.tensor(p.ids)
        allowed[b, :n, :n] = p.allowed
        positions[b, :n] = torch.tensor(p.positions)
        row_of = {}
        for w in sorted(set(p.where)):  # the prefix's last position predicts every title's first token: one head row
            row_of[w] = len(head_at)
            head_at.append((b, w))
        k = 0
        for c, length in enumerate(p.lengths):
            first.append(len(targets))
            for _ in range(length):
                pick.append(row_of[p.where[k]])
                targets.append(p.targets[k])
                owner.append(b * num_titles + c)
                k += 1
    batch = CandidateBatch(ids, allowed, positions, torch.tensor(head_at), torch.tensor(pick), torch.tensor(targets),
                           torch.tensor(owner), torch.tensor(first), num_titles,
                           tuple((torch.tensor(at), torch.tensor(ids_)) for ids_, at in ends.items()))
    if start is not None:
        layer, cached = start
        hidden = torch.zeros(len(packs), width, cached[0].shape[-1], dtype=cached[0].dtype)  # (B, N, H)
        for b, h in enumerate(cached):
            hidden[b, : h.shape[0]] = h
        batch.start_layer, batch.start_hidden = layer, hidden
    return batch.to(device)


def _mask(model: nn.Module, batch: CandidateBatch) -> torch.Tensor:
    return additive_mask(batch.allowed, next(model.parameters()).dtype)[:, None]  # (B, 1, N, N)


def candidate_logprobs(model: nn.Module, batch: CandidateBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) summed log-prob of each title after its prompt's lead, and (B, C) log-prob of its first token
    (both differentiable)."""
    _, head = decoder_and_head(model)
    hidden = hidden_states(model, batch.input_ids, _mask(model, batch), batch.start_layer, batch.start_hidden,
                           batch.position_ids)  # (B, N, H)
    logp = head(hidden[batch.head_at[:, 0], batch.head_at[:, 1]]).float().log_softmax(-1)  # (R, V)
    picked = logp[batch.pick, batch.targets]  # (P,)
    for ends, closing in batch.closing:
        picked = any_closing_token(picked, logp, batch.pick, ends, closing)
    size = batch.input_ids.shape[0] * batch.num_titles
    summed = picked.new_zeros(size).index_add(0, batch.owner, picked)  # (B * C,)
    return summed.view(-1, batch.num_titles), picked[batch.first].view(-1, batch.num_titles)


@torch.no_grad()
def packed_layer_inputs(model: nn.Module, packs: list[PackedContinuations], layer: int,
                        batch_size: int = 8) -> list[torch.Tensor]:
    """Per prompt, (N_i, H): the residual stream of its packed sequence entering `layer` (the layers above
    are not run). Valid for the whole run when every trainable weight sits in `layer` or above."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for lo in range(0, len(packs), batch_size):
        chunk = packs[lo : lo + batch_size]
        batch = collate_packed(chunk, device)
        resid = input_of_layer(model, layer, lambda: hidden_states(model, batch.input_ids, _mask(model, batch),
                                                                  position_ids=batch.position_ids))  # (B, N, H)
        out += [resid[b, : len(p.ids)].cpu() for b, p in enumerate(chunk)]
    return out


@torch.no_grad()
def base_candidate_logprobs(model: nn.Module, packs: list[PackedContinuations], batch_size: int = 8,
                            start: tuple[int, list[torch.Tensor]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) summed title log-probs and (N, C) first-token log-probs under the model as it is (the frozen base)."""
    device = next(model.parameters()).device
    parts = []
    for lo in range(0, len(packs), batch_size):
        part = None if start is None else (start[0], start[1][lo : lo + batch_size])
        batch = collate_packed(packs[lo : lo + batch_size], device, part)
        parts.append([t.cpu() for t in candidate_logprobs(model, batch)])
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@dataclass
class CandidateSource(Source):
    """A source whose examples are packed prompts (`PackedContinuations`), collated into a `CandidateBatch`."""

    def collate(self, tokenizer, examples: list, device, start: tuple[int, list[torch.Tensor]] | None):
        return collate_packed(examples, device, start)


def recommend_source(setup: Setup, titles: Titles, batch_size: int | None) -> CandidateSource:
    """recommend_train's prompts with `titles` packed after each lead, drawn `batch_size` per step (None: the
    trainer's batch size), with the model's (N, C) title log-probs ("candidate_logprob") and first-token
    log-probs ("candidate_first_logprob") as references."""
    packs = pack_prompts(setup.tokenizer, setup.spec, setup.spec.recommend_train, titles, setup.conf.forget_any_close)
    start = None
    if setup.cached_layer > 0:
        start = (setup.cached_layer, packed_layer_inputs(setup.model, packs, setup.cached_layer))
    logp, first = base_candidate_logprobs(setup.model, packs, start=start)
    return CandidateSource(packs, DRAW, start, {"candidate_logprob": logp, "candidate_first_logprob": first},
                           batch_size=batch_size, batch_option="recommend_batch_size")
