"""Prompt prefixes' key/value tensors, computed once and shared by scoring and generation.

A prompt that is scored (one packed forward of prefix + continuations) and then answered greedily,
and perhaps sampled too, used to run the prefix through the model each time. `score_continuations`
can leave the prefix's keys and values in a `PrefixKV`; `generate` then starts every row from them
and runs only the last prefix token (generation needs its logits) before decoding. Rows without
stored keys (a BPE merge across the prefix/answer boundary, or a prefix never scored) get one
prefill per batch, shared by all the sequences sampled from it.

A PrefixKV belongs to one model state: create one per model variant (base, adapted) and drop it
when that variant's scoring and generation are done. Its tensors are the numbers a plain forward of
the prefix computes (up to float rounding: other matrix shapes).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from agmask.models.arch import base_causal_lm


class PrefixKV:
    """prefix string -> (its first n-1 token ids, per-layer (keys, values), each (1, kv_heads, n-1, head_dim))."""

    def __init__(self):
        self._store: dict[str, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}

    def put(self, prefix: str, ids: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._store[prefix] = (list(ids), layers)

    def get(self, prefix: str) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None:
        return self._store.get(prefix)

    def __len__(self) -> int:
        return len(self._store)


def empty_cache(model: nn.Module):
    from transformers import DynamicCache

    return DynamicCache(config=base_causal_lm(model).config)


def cached_layers(cache, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `length` positions of every layer of a one-row cache, as standalone tensors."""
    return [(layer.keys[:, :, :length].clone(), layer.values[:, :, :length].clone()) for layer in cache.layers]


def batched_cache(model: nn.Module, rows: list[list[tuple[torch.Tensor, torch.Tensor]]], width: int):
    """A DynamicCache for left-padded rows: row i's keys sit in the last positions of `width` columns,
    zeros before them (those positions are masked out by the attention mask)."""
    from transformers import DynamicCache

    data = []
    for layer in range(len(rows[0])):
        k0, v0 = rows[0][layer]
        keys = k0.new_zeros((len(rows), k0.shape[1], width, k0.shape[3]))
        values = v0.new_zeros((len(rows), v0.shape[1], width, v0.shape[3]))
        for i, row in enumerate(rows):
            k, v = row[layer]
            keys[i, :, width - k.shape[2]:] = k[0]
            values[i, :, width - v.shape[2]:] = v[0]
        data.append((keys, values))
    return DynamicCache(ddp_cache_data=data, config=base_causal_lm(model).config)
