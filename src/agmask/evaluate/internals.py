"""Tensor helpers for the model-internal metrics: last-token residuals, logit lens, next-token log-probs.

All run without gradients on right-padded batches; positions come from the attention mask, so padding
never changes a result.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from agmask.errors import ModelError
from agmask.probing import capture, resid_hook_name
from agmask.models.arch import num_layers
from agmask.scoring.cached import run_cached
from agmask.scoring.encode import encode_answer
from agmask.scoring.kvcache import PrefixKV
from agmask.scoring.logprobs import decoder_and_head, hidden_states


def right_pad(id_lists: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask for token lists of different lengths."""
    width = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), width), pad, dtype=torch.long)
    mask = torch.zeros((len(id_lists), width), dtype=torch.long)
    for i, row in enumerate(id_lists):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.no_grad()
def last_token_resid(model: nn.Module, id_lists: list[list[int]], pad: int, kv: PrefixKV | None = None) -> torch.Tensor:
    """(N, L, H) residual stream after every decoder layer at each sequence's last token. A sequence runs alone
    (no padding), and only what `kv` does not hold of it: usually its last token."""
    names = [resid_hook_name(i) for i in range(num_layers(model))]
    out = []
    for ids in id_lists:
        with capture(model, names) as cache:
            run_cached(model, [ids], kv, pad_id=pad)
        out.append(torch.stack([cache[n][0, -1].float().cpu() for n in names]))  # (L, H): the last computed token
    return torch.stack(out)


@torch.no_grad()
def logit_lens_ranks(model: nn.Module, resid: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """(N, L) rank (1 = top) of each target token when layer l's residual goes through final norm + lm_head."""
    body, head = decoder_and_head(model)
    norm = getattr(body, "norm", None)
    if norm is None:
        raise ModelError("logit lens needs the model's final norm (`model.norm`)")
    device = next(model.parameters()).device
    ranks = []
    for i, target in enumerate(targets):
        logits = head(norm(resid[i].to(device))).float()  # (L, V)
        ranks.append((logits > logits[:, target : target + 1]).sum(-1) + 1)  # (L,)
    return torch.stack(ranks).cpu()


@torch.no_grad()
def answer_position_logprobs(model: nn.Module, tokenizer, prefixes: list[str], answers: list[str],
                             kv: PrefixKV | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token log-probs at every position that predicts an answer token of prefix + answer (tokenised
    jointly, as `encode_answer` does): ((N, V) log-probs, (N,) row of each position), rows in order. What
    `kv` holds of a prefix is not run again."""
    _, head = decoder_and_head(model)
    encoded = [encode_answer(tokenizer, p, a) for p, a in zip(prefixes, answers)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    run = run_cached(model, [e.input_ids[:-1] for e in encoded], kv, need=[e.answer_start - 1 for e in encoded],
                     pad_id=pad)
    picks = [(i, t) for i, e in enumerate(encoded) for t in range(e.answer_start - 1, len(e.input_ids) - 1)]
    hidden = torch.stack([run.position(i, t) for i, t in picks])  # (N, H)
    rows = torch.tensor([i for i, _ in picks])
    return head(hidden).float().log_softmax(-1).cpu(), rows


def kl_per_position(base_lp: torch.Tensor, adapted_lp: torch.Tensor) -> torch.Tensor:
    """(N,) KL(base || adapted) = sum_v p_base (log p_base - log p_adapted), from (N, V) log-probs."""
    return (base_lp.exp() * (base_lp - adapted_lp)).sum(-1).clamp(min=0.0)


@torch.no_grad()
def window_logprobs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(W-1, V) next-token log-probs for one window of plain text ids (W,), positions 0..W-2."""
    _, head = decoder_and_head(model)
    device = next(model.parameters()).device
    ids = ids.unsqueeze(0).to(device)
    hidden = hidden_states(model, ids, torch.ones_like(ids))[0, :-1]  # (W-1, H)
    return head(hidden).float().log_softmax(-1).cpu()
