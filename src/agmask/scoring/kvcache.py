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
    walks the query's tokens once."""

    def __init__(self):
        self._entries: list[tuple[list[int], Layers]] = []
        self._trie: dict = {}  # token -> (entry index, child trie)

    def put(self, ids: list[int], layers: Layers) -> None:
        """Store the keys/values of exactly `ids` (each layer's tensors hold len(ids) positions)."""
        if not ids or self.longest(ids)[0] == len(ids):
            return  # nothing new: an existing entry already covers every token
        self._entries.append((list(ids), layers))
        index, node = len(self._entries) - 1, self._trie
        for token in ids:
            if token not in node:
                node[token] = (index, {})
            node = node[token][1]

    def longest(self, ids: list[int], limit: int | None = None) -> tuple[int, Layers | None]:
        """(m, keys/values of ids[:m]) for the longest stored prefix of ids[:limit]; (0, None) if none."""
        node, m, index = self._trie, 0, None
        for token in ids[:limit]:
            if token not in node:
                break
            index, node = node[token]
            m += 1
        if not m:
            return 0, None
        layers = self._entries[index][1]
        return m, [(k[:, :, :m], v[:, :, :m]) for k, v in layers]

    def __len__(self) -> int:
        return len(self._entries)

    def tokens(self) -> int:
        """Positions stored (memory: positions x layers x 2 x kv_heads x head_dim values)."""
        return sum(len(ids) for ids, _ in self._entries)


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
