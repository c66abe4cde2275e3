"""Run a batch of token sequences after the prefixes a `PrefixKV` already holds: only the rest is computed.

Row i takes its longest stored prefix (m_i tokens, at most `need[i]`, the first position whose hidden
state the caller reads) from the cache and computes its other tokens. Rows are computed in groups of
similar length (sorted, at most ~20% padding), each group as

    [ cached parts, left-padded to M = max m_i | computed parts, right-padded to T = max (len_i - m_i) ]

so one attention mask covers both and positions come from it (0 at each row's first real token): every
row is computed exactly as if it ran alone from its first token. Each row's keys/values (cached +
computed) go into the PrefixKV for later forwards (into a private one when none is given).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from agmask.models.arch import base_causal_lm
from agmask.scoring.kvcache import Layers, PrefixKV, batched_cache, cached_layers, empty_cache
from agmask.scoring.logprobs import decoder_and_head, position_ids_from_mask

MAX_PADDING = 0.2  # a row joins a group when its computed length is at least (1 - this) x the group's longest


@dataclass
class CachedRun:
    hidden: torch.Tensor  # (B, T, H) final hidden state (after the final norm) of every computed token
    starts: list[int]  # per row: tokens taken from the cache; hidden[i, t] is the state of token starts[i] + t
    kv: PrefixKV  # holds every row's whole sequence now

    def position(self, row: int, index: int) -> torch.Tensor:
        """(H,) hidden state of token `index` of row `row` (it must have been computed)."""
        return self.hidden[row, index - self.starts[row]]


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Row indices with something to compute, longest first, grouped so that padding stays under MAX_PADDING."""
    order = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] >= (1 - MAX_PADDING) * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@torch.no_grad()
def run_cached(model: nn.Module, sequences: list[list[int]], kv: PrefixKV | None, need: list[int] | None = None,
               pad_id: int = 0) -> CachedRun:
    """Hidden states of every token of `sequences` at or after `need[i]` (default: each row's last token),
    running only what `kv` does not hold. need[i] = len(sequences[i]) asks for keys/values only."""
    kv = PrefixKV() if kv is None else kv
    need = [len(s) - 1 for s in sequences] if need is None else need
    found = [kv.longest(s, limit=max(0, n)) for s, n in zip(sequences, need)]
    starts = [m for m, _ in found]
    rest = [len(s) - m for s, m in zip(sequences, starts)]
    device = next(model.parameters()).device
    hidden = torch.zeros((len(sequences), max(rest, default=0), base_causal_lm(model).config.hidden_size),
                         device=device, dtype=next(model.parameters()).dtype)
    for group in length_groups(rest):
        out = _run_group(model, [sequences[i] for i in group], [found[i] for i in group], pad_id, kv)
        for row, i in enumerate(group):
            hidden[i, : rest[i]] = out[row, : rest[i]]
    return CachedRun(hidden, starts, kv)


def _run_group(model: nn.Module, sequences: list[list[int]], found: list[tuple[int, Layers | None]], pad_id: int,
               kv: PrefixKV) -> torch.Tensor:
    """One forward of the rows' uncached tokens after their cached prefixes; stores each row. (B, T, H)."""
    device = next(model.parameters()).device
    starts = [m for m, _ in found]
    width = max(starts)
    rest = [s[m:] for s, m in zip(sequences, starts)]
    tail = max(len(r) for r in rest)
    ids = torch.full((len(sequences), tail), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width + tail), dtype=torch.long)
    for i, (m, r) in enumerate(zip(starts, rest)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, width - m : width + len(r)] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = batched_cache(model, [layers for _, layers in found], width) if width else empty_cache(model)
    body, _ = decoder_and_head(model)
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)[:, width:],
                  past_key_values=cache, use_cache=True).last_hidden_state  # (B, T, H)
    for i, (seq, m, r) in enumerate(zip(sequences, starts, rest)):
        kv.put(seq, [(torch.cat([k[:, :, width - m :], k2], dim=2), torch.cat([v[:, :, width - m :], v2], dim=2))
                     for (k, v), (k2, v2) in zip(cached_layers(cache, width, row=i),
                                                 cached_layers(cache, len(r), row=i, start=width))])
    return hidden


def prompt_cache(model: nn.Module, sequences: list[list[int]], kv: PrefixKV | None, pad_id: int = 0):
    """(ids, mask, DynamicCache or None) of left-padded `sequences`, their keys/values from `kv` (what it
    lacks computed first): the state a batched generation starts from."""
    run = run_cached(model, sequences, kv, need=[len(s) for s in sequences], pad_id=pad_id)
    width = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    device = next(model.parameters()).device
    cache = batched_cache(model, [run.kv.longest(s)[1] for s in sequences], width) if width else None
    return ids.to(device), mask.to(device), cache
