"""A prefix cache: keys/values of token sequences already run, reused by every later forward they begin.

Prompts share long token prefixes: the chat template's system turn opens every one, the same question
comes with several leads (the set's, another answer format's, a reply after it), and a prompt is scored,
answered greedily, sampled, and measured again (KL, residuals) by later metrics. A `PrefixKV` keeps the
keys and values of what ran; a forward through `run_cached` (or `score_continuations`, `generate`) finds
the longest stored prefix of its tokens and runs only the rest.

A PrefixKV belongs to one model state (the same weights, the same adapters enabled): create one per
model variant and drop it when the variant's work is done. Reused keys are the numbers a plain forward
computes (a position's keys depend only on the tokens up to it), up to float rounding (other matrix
shapes), so results agree with an uncached forward to ~1e-6.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from agmask.models.arch import base_causal_lm

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer: (keys, values), each (1, kv_heads, n, head_dim)


class PrefixKV:
    """Token ids -> their per-layer keys/values; `longest(ids)` finds the longest stored prefix of `ids`.

    A trie over token ids points each node at one stored sequence that passes through it, so a lookup
    walks the query's tokens once. A sequence is stored as its parent (the stored sequence it extends)
    and the positions it adds, so memory grows with the distinct positions, not with the sequences."""

    def __init__(self):
        self._entries: list[tuple[int | None, int, Layers]] = []  # (parent entry, positions from it, own positions)
        self._trie: dict = {}  # token -> (entry index, child trie)

    def put(self, ids: list[int], layers: Layers) -> None:
        """Store the keys/values of exactly `ids` (each layer's tensors hold len(ids) positions)."""
        m, parent = self._walk(ids)
        if not ids or m == len(ids):
            return  # nothing new: a stored sequence already covers every token
        own = [(k[:, :, m:].clone(), v[:, :, m:].clone()) for k, v in layers]  # a copy: the caller's tensors can go
        self._entries.append((parent if m else None, m, own))
        index, node = len(self._entries) - 1, self._trie
        for token in ids:
            if token not in node:
                node[token] = (index, {})
            node = node[token][1]

    def longest(self, ids: list[int], limit: int | None = None) -> tuple[int, Layers | None]:
        """(m, keys/values of ids[:m]) for the longest stored prefix of ids[:limit]; (0, None) if none."""
        m, index = self._walk(ids[:limit])
        return (m, self._layers(index, m)) if m else (0, None)

    def lookup_only(self) -> "PrefixKV":
        """A view that finds what this cache holds but keeps nothing new (prompts no later forward extends)."""
        view = _LookupOnly()
        view._entries, view._trie = self._entries, self._trie
        return view

    def _walk(self, ids: list[int]) -> tuple[int, int | None]:
        node, m, index = self._trie, 0, None
        for token in ids:
            if token not in node:
                break
            index, node = node[token]
            m += 1
        return m, index

    def _layers(self, index: int, m: int) -> Layers:
        """The first m positions of entry `index`: its parent's, then its own."""
        parent, offset, own = self._entries[index]
        if m <= offset:
            return self._layers(parent, m)
        mine = [(k[:, :, : m - offset], v[:, :, : m - offset]) for k, v in own]
        if not offset:
            return mine
        return [(torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2))
                for (pk, pv), (k, v) in zip(self._layers(parent, offset), mine)]

    def __len__(self) -> int:
        return len(self._entries)

    def tokens(self) -> int:
        """Positions stored (memory: positions x layers x 2 x kv_heads x head_dim values)."""
        return sum(own[0][0].shape[2] for _, _, own in self._entries)


class _LookupOnly(PrefixKV):
    def put(self, ids: list[int], layers: Layers) -> None:
        return None


def empty_cache(model: nn.Module):
    from transformers import DynamicCache

    return DynamicCache(config=base_causal_lm(model).config)


def cached_layers(cache, length: int, row: int = 0, start: int = 0) -> Layers:
    """Positions start..start+length of one row of a cache, as standalone (1, kv_heads, length, head_dim) tensors."""
    return [(layer.keys[row : row + 1, :, start : start + length].clone(),
             layer.values[row : row + 1, :, start : start + length].clone()) for layer in cache.layers]


def batched_cache(model: nn.Module, rows: list[Layers | None], width: int):
    """A DynamicCache for left-padded rows: row i's keys sit in the last positions of `width` columns,
    zeros before them (those positions are masked out by the attention mask); None: a row with none."""
    from transformers import DynamicCache

    some = next(row for row in rows if row is not None)
    data = []
    for layer in range(len(some)):
        k0, v0 = some[layer]
        keys = k0.new_zeros((len(rows), k0.shape[1], width, k0.shape[3]))
        values = v0.new_zeros((len(rows), v0.shape[1], width, v0.shape[3]))
        for i, row in enumerate(rows):
            if row is not None and row[layer][0].shape[2]:
                k, v = row[layer]
                keys[i, :, width - k.shape[2]:] = k[0]
                values[i, :, width - v.shape[2]:] = v[0]
        data.append((keys, values))
    return DynamicCache(ddp_cache_data=data, config=base_causal_lm(model).config)
