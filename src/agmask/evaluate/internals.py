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
from agmask.scoring.encode import AnswerBatch
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
def last_token_resid(model: nn.Module, id_lists: list[list[int]], pad: int, batch_size: int = 8) -> torch.Tensor:
    """(N, L, H) residual stream after every decoder layer at each sequence's last real token."""
    n_layers = num_layers(model)
    names = [resid_hook_name(i) for i in range(n_layers)]
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(id_lists), batch_size):
        ids, mask = right_pad(id_lists[lo : lo + batch_size], pad)
        with capture(model, names) as cache:
            hidden_states(model, ids.to(device), mask.to(device))
        acts = torch.stack([cache[n].to(device) for n in names], dim=1).float()  # (B, L, T, H); layers may be on several GPUs
        last = (mask.sum(1) - 1).to(acts.device)  # (B,) index of the last real token
        rows = torch.arange(len(ids), device=acts.device)
        out.append(acts[rows, :, last].cpu())  # (B, L, H)
    return torch.cat(out)


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
def answer_position_logprobs(model: nn.Module, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token log-probs at every answer-predicting position: ((N, V) log-probs, (N,) row of each position)."""
    _, head = decoder_and_head(model)
    device = next(model.parameters()).device
    batch = batch.to(device)
    hidden = hidden_states(model, batch.input_ids, batch.attention_mask)  # (B, T, H)
    where = batch.target_mask.bool() & batch.attention_mask.bool()  # (B, T)
    rows = where.nonzero()[:, 0]  # (N,)
    return head(hidden[where]).float().log_softmax(-1).cpu(), rows.cpu()


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
