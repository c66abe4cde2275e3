"""Causal effects of mean-ablating MLP neurons on answer log-probs, measured in batches.

Mean-ablation replaces a neuron's activation (the input of down_proj, index space (layer, unit)) by
its mean over a reference set (retain_train) at chosen positions, not by zero: zero is far outside
a neuron's usual range and measures the damage of an impossible input, the mean removes what the
neuron says about this prompt only.

Cost. An ablation in layer l leaves layers 0..l-1 untouched, so the residual stream entering l is
computed once per prompt by a clean forward (`cache_inputs`) and every ablated forward starts there.
Many ablations run in one batched forward: batch row r = (ablation a, prompt n), and the hook of each
ablated layer replaces, per row, that row's own units (a (rows, intermediate) boolean mask).
Every prompt starts with the same chat header (a system prompt, `<|im_start|>user\n`): when no
ablated position lies in it, its keys and values are the same in every row and under every ablation,
so they are computed once and the ablated forwards run only the tokens after it (for the 0.5B model's
template with its default system prompt, about 40% of a prompt's tokens).

Effects are changes of the summed answer log-prob (prompt + lead + first alias + closing quote, the quote
scored as any token that closes the answer, as every other scorer does): `change = ablated - clean`, per
ablation and prompt.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn

from agmask.attribution.positions import check_positions, position_mask
from agmask.models.arch import base_causal_lm, mlp_module, skip_layers
from agmask.probing import capture, mlp_hook_name, resid_hook_name
from agmask.progress import Advance
from agmask.scoring import collate_answers, prefix_for
from agmask.scoring.encode import AnswerBatch, closing_for
from agmask.scoring.kvcache import cached_layers, empty_cache
from agmask.scoring.logprobs import answer_token_logprobs, decoder_and_head, position_ids_from_mask, token_logprobs

Ablation = dict[int, torch.Tensor]  # layer -> (intermediate,) bool: the units replaced in that layer


@dataclass
class EncodedPrompts:
    """One prompt set tokenised once (right padding happens per batch), with what the clean forward cached."""

    name: str
    ids: list[torch.Tensor]  # per prompt (T_n,) joint prompt + lead + answer tokens
    target: list[torch.Tensor]  # per prompt (T_n,) 1 where the position predicts an answer token
    where: dict[str, list[torch.Tensor]]  # positions kind -> per prompt (T_n,) 1 on those positions
    # per prompt: (position, closing token ids) where its last target closes the answer (scored as any of them)
    closing: list[tuple[int, tuple[int, ...]] | None] = field(default_factory=list)
    base: torch.Tensor | None = None  # (N,) clean answer log-prob, set by cache_inputs
    # layer -> per prompt (T_n, H): the residual stream entering that layer, set by cache_inputs
    inputs: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    header: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (keys, values) of the shared tokens,
    # each (1, kv_heads, shared, head_dim), set by cache_inputs

    @property
    def shared(self) -> int:
        """Leading tokens every prompt has in common, before any answer-predicting position."""
        n = min(int(t.nonzero()[0]) for t in self.target)  # the first answer-predicting position of any prompt
        first = self.ids[0]
        for i in range(n):
            if any(x[i] != first[i] for x in self.ids):
                return i
        return n

    def free_of(self, kind: str) -> int:
        """Leading shared tokens with no `kind` position in any prompt (an ablation there leaves them clean)."""
        firsts = [int(w.nonzero()[0]) if w.any() else len(w) for w in self.where[kind]]
        return min([self.shared] + firsts)

    def __len__(self) -> int:
        return len(self.ids)


def encode_prompts(tokenizer, spec, set_name: str, items: list, kinds: tuple[str, ...] = ("all",)) -> EncodedPrompts:
    """Each item with its first answer alias (+ the closing quote its lead opens), positions of each kind."""
    prefixes = [prefix_for(tokenizer, spec, set_name, it) for it in items]
    closes = [closing_for(spec.lead_for(set_name, it)) for it in items]
    answers = [spec.answers_for(it)[0] + close for it, close in zip(items, closes)]
    out = EncodedPrompts(set_name, [], [], {check_positions(k): [] for k in kinds})
    for item, prefix, answer, close in zip(items, prefixes, answers, closes):
        one = collate_answers(tokenizer, [prefix], [answer], closes=[close])
        out.ids.append(one.input_ids[0])
        out.target.append(one.target_mask[0])
        out.closing.append(one.closing[0][1:] if one.closing else None)
        for kind in kinds:
            out.where[kind].append(position_mask(tokenizer, kind, one, [item.prompt], [prefix + answer])[0])
    return out


def _collate(prompts: EncodedPrompts, rows: list[int], pad_id: int, start: int, kind: str | None,
             device) -> tuple[AnswerBatch, torch.Tensor | None]:
    """Right-padded batch of the given prompts (rows may repeat), starting at layer `start`; and the
    (B, T) bool mask of the `kind` positions (None: no ablation)."""
    width = max(len(prompts.ids[n]) for n in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn, tgt = torch.zeros_like(ids), torch.zeros_like(ids)
    where = torch.zeros((len(rows), width), dtype=torch.bool)
    hidden = None
    if start > 0:
        first = prompts.inputs[start][rows[0]]
        hidden = torch.zeros(len(rows), width, first.shape[-1], dtype=first.dtype)  # (B, T, H)
    for i, n in enumerate(rows):
        t = len(prompts.ids[n])
        ids[i, :t], attn[i, :t], tgt[i, :t] = prompts.ids[n], 1, prompts.target[n]
        if kind is not None:
            where[i, :t] = prompts.where[kind][n].bool()
        if hidden is not None:
            hidden[i, :t] = prompts.inputs[start][n]
    closing = tuple((i, *prompts.closing[n]) for i, n in enumerate(rows) if prompts.closing and prompts.closing[n])
    batch = AnswerBatch(ids, attn, tgt, start, hidden, closing).to(device)
    return batch, (where.to(device) if kind is not None else None)


@contextmanager
def mean_ablation(model: nn.Module, units: dict[int, torch.Tensor], where: torch.Tensor,
                  means: torch.Tensor) -> Iterator[None]:
    """Inside the block, a forward of a (B, T) batch sees in each layer l of `units` the activation of
    row b's units `units[l][b]` ((B, I) bool) replaced by `means[l]` ((L, I)) at the positions `where[b]`
    ((B, T) bool). Hooks (pre-hooks of down_proj) are removed in `finally`."""
    handles = []
    try:
        for layer, rows in units.items():
            def hook(module, args, _rows=rows, _mean=means[layer]):
                act = args[0]  # (B, T, I)
                replace = where.to(act.device)[:, :, None] & _rows.to(act.device)[:, None, :]  # (B, T, I)
                return (torch.where(replace, _mean.to(act.device, act.dtype), act), *args[1:])

            handles.append(mlp_module(model, layer, "down").register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@torch.no_grad()
def activation_means(model: nn.Module, tokenizer, prompts: EncodedPrompts, batch_size: int = 8,
                     advance: Advance | None = None) -> dict[str, torch.Tensor]:
    """Per positions kind of `prompts`, (L, I) mean MLP activation over those positions of every prompt."""
    device = next(model.parameters()).device
    n_layers = model.config.num_hidden_layers
    names = [mlp_hook_name(i) for i in range(n_layers)]
    kinds = list(prompts.where)
    sums = torch.zeros(len(kinds), n_layers, model.config.intermediate_size, dtype=torch.float64)  # (K, L, I)
    counts = torch.zeros(len(kinds), dtype=torch.float64)
    for lo in range(0, len(prompts), batch_size):
        rows = list(range(lo, min(lo + batch_size, len(prompts))))
        batch, _ = _collate(prompts, rows, _pad_id(tokenizer), 0, None, device)
        masks = torch.stack([_collate(prompts, rows, _pad_id(tokenizer), 0, k, device)[1] for k in kinds]).float()

        def summed(act: torch.Tensor, _masks=masks) -> torch.Tensor:  # (B, T, I) -> (K, I): sum over each kind
            return torch.einsum("kbt,bti->ki", _masks.to(act.device), act.float())

        with capture(model, names, reduce=summed) as cache:
            token_logprobs(model, batch)
        sums += torch.stack([cache[name].double().cpu() for name in names], dim=1)  # (K, L, I)
        counts += masks.sum((1, 2)).double().cpu()
        if advance:
            advance(len(rows))
    return {k: (sums[i] / counts[i].clamp(min=1.0)).float() for i, k in enumerate(kinds)}


@torch.no_grad()
def cache_inputs(model: nn.Module, tokenizer, prompts: EncodedPrompts, layers: list[int], batch_size: int = 8,
                 advance: Advance | None = None) -> None:
    """One clean forward per batch: sets `prompts.base` (clean answer log-probs) and, for each of `layers`
    above 0, `prompts.inputs[layer]` (the residual stream entering it, per prompt (T_n, H))."""
    device = next(model.parameters()).device
    starts = sorted({l for l in layers if l > 0})
    names = [resid_hook_name(l - 1) for l in starts]  # the output of layer l-1 is the input of layer l
    base, inputs = [], {l: [] for l in starts}
    for lo in range(0, len(prompts), batch_size):
        rows = list(range(lo, min(lo + batch_size, len(prompts))))
        batch, _ = _collate(prompts, rows, _pad_id(tokenizer), 0, None, device)
        with capture(model, names) as cache:
            base.append(token_logprobs(model, batch).sum(-1).float().cpu())
        for layer, name in zip(starts, names):
            inputs[layer] += [cache[name][i, : len(prompts.ids[n])].cpu() for i, n in enumerate(rows)]
        if advance:
            advance(len(rows))
    prompts.base = torch.cat(base)
    prompts.inputs.update(inputs)
    shared = prompts.shared
    if shared > 0:  # the header's keys and values, once
        body, _ = decoder_and_head(model)
        cache = empty_cache(model)
        body(input_ids=prompts.ids[0][None, :shared].to(device), use_cache=True, past_key_values=cache)
        prompts.header = cached_layers(cache, shared)


def drop_inputs(prompts: EncodedPrompts, keep: list[int]) -> None:
    """Free the cached inputs of every layer not in `keep`."""
    for layer in [l for l in prompts.inputs if l not in keep]:
        del prompts.inputs[layer]


@torch.no_grad()
def ablated_logprobs(model: nn.Module, tokenizer, prompts: EncodedPrompts, ablations: list[Ablation], kind: str,
                     means: torch.Tensor, batch_size: int = 16, advance: Advance | None = None) -> torch.Tensor:
    """(A, N) answer log-prob of each prompt under each ablation (its units mean-ablated at the `kind`
    positions). The forward starts at the lowest ablated layer, from the inputs `cache_inputs` stored."""
    layers = sorted({l for a in ablations for l in a})
    start = layers[0] if layers else 0
    if start > 0 and start not in prompts.inputs:
        raise ValueError(f"inputs of layer {start} are not cached: call cache_inputs with it first")
    device = next(model.parameters()).device
    width = model.config.intermediate_size
    skip = prompts.free_of(kind) if prompts.header is not None else 0  # header tokens not run again
    pairs = [(a, n) for a in range(len(ablations)) for n in range(len(prompts))]  # row r = (ablation, prompt)
    out = torch.empty(len(ablations), len(prompts))
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo : lo + batch_size]
        batch, where = _collate(prompts, [n for _, n in chunk], _pad_id(tokenizer), start, kind, device)
        units = {l: torch.stack([ablations[a].get(l, torch.zeros(width, dtype=torch.bool)) for a, _ in chunk])
                 for l in layers}  # layer -> (B, I)
        with mean_ablation(model, units, where[:, skip:], means):
            lp = _answer_logprobs_after(model, batch, prompts.header, skip).float().cpu()  # (B,)
        for (a, n), v in zip(chunk, lp):
            out[a, n] = v
        if advance:
            advance(len(chunk))
    return out


def _answer_logprobs_after(model: nn.Module, batch: AnswerBatch, header, skip: int) -> torch.Tensor:
    """(B,) summed answer log-prob; the first `skip` tokens (shared by every row) come from `header`'s
    keys and values instead of being run, and the forward starts at `batch.start_layer`."""
    if skip == 0:
        return token_logprobs(model, batch).sum(-1)
    from transformers import DynamicCache

    body, head = decoder_and_head(model)
    rows = batch.input_ids.shape[0]
    shared = [(k[:, :, :skip].expand(rows, -1, -1, -1), v[:, :, :skip].expand(rows, -1, -1, -1)) for k, v in header]
    cache = DynamicCache(ddp_cache_data=shared, config=base_causal_lm(model).config)  # copied on update, never mutated
    positions = position_ids_from_mask(batch.attention_mask)[:, skip:]
    kwargs = dict(attention_mask=batch.attention_mask, position_ids=positions, past_key_values=cache, use_cache=True)
    if batch.start_hidden is None or batch.start_layer == 0:
        hidden = body(input_ids=batch.input_ids[:, skip:], **kwargs).last_hidden_state  # (B, T - skip, H)
    else:
        with skip_layers(model, batch.start_layer):
            hidden = body(inputs_embeds=batch.start_hidden[:, skip:], **kwargs).last_hidden_state
    tail = AnswerBatch(batch.input_ids[:, skip:], batch.attention_mask[:, skip:], batch.target_mask[:, skip:],
                       closing=tuple((i, t - skip, ids) for i, t, ids in batch.closing))  # the rows after the header
    where = (tail.target_mask.bool() & tail.attention_mask.bool())  # (B, T - skip)
    log_softmax = head(hidden[where]).float().log_softmax(-1)  # (N, V): answer-predicting positions only
    return answer_token_logprobs(tail, log_softmax, where).sum(-1)


@dataclass(frozen=True)
class Effect:
    """Mean effects of one ablation: how far the concept's answer log-prob fell (positive = lowered) and
    how far the neighbours' moved either way (mean |change|), in nats."""

    concept: float
    neighbour: float

    def ratio(self, floor: float) -> float:
        """Concept effect per unit of neighbour effect; the neighbour effect counts as at least `floor`."""
        return self.concept / max(self.neighbour, floor)

    def to_dict(self, floor: float) -> dict:
        return {"concept_effect": self.concept, "neighbour_effect": self.neighbour, "ratio": self.ratio(floor)}


def effects(forget: EncodedPrompts, neighbours: EncodedPrompts, forget_lp: torch.Tensor,
            neighbour_lp: torch.Tensor) -> list[Effect]:
    """One Effect per ablation from (A, N) ablated log-probs of both sets (clean ones cached in `.base`)."""
    drop = (forget.base[None, :] - forget_lp).mean(1)  # (A,)
    moved = (neighbour_lp - neighbours.base[None, :]).abs().mean(1)  # (A,)
    return [Effect(float(c), float(m)) for c, m in zip(drop, moved)]
