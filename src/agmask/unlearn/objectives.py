"""Loss terms shared by the methods. Each returns a scalar: the MEAN over the samples of the batch
(per-sample first), so shards of a batch on several processes add up exactly to the whole batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agmask.probing import capture, resid_hook_name
from agmask.scoring.encode import AnswerBatch
from agmask.scoring.logprobs import (answer_log_softmax, answer_token_logprobs, decoder_and_head, hidden_states,
                                     token_logprobs)
from agmask.scoring.preference import kl_remaining


def answer_logprob(model, batch: AnswerBatch) -> torch.Tensor:
    """(B,) summed answer log-prob under the adapted model (differentiable)."""
    return token_logprobs(model, batch).sum(-1)


def answer_and_first_logprob(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) summed answer log-prob and (B,) log-prob of the answer's FIRST token (both differentiable)."""
    lp = token_logprobs(model, batch)  # (B, T), 0 off the answer
    return lp.sum(-1), first_answer_token(lp, batch)


def answer_first_and_start(model, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward: (B,) summed answer log-prob, (B,) its first token's log-prob and (B, V) the log-softmax at
    each sample's first answer-predicting position, where the answer starts (all differentiable)."""
    log_softmax, where = answer_log_softmax(model, batch)  # (N, V), row-major over the batch
    lp = answer_token_logprobs(batch, log_softmax, where)
    counts = where.sum(1)
    return lp.sum(-1), first_answer_token(lp, batch), log_softmax[counts.cumsum(0) - counts]


def first_answer_token(lp: torch.Tensor, batch: AnswerBatch) -> torch.Tensor:
    """(B,) the value of `lp` (B, T) at each sample's first answer-predicting position."""
    where = batch.target_mask.bool() & batch.attention_mask.bool()
    first = where.int().argmax(-1)  # index of the first True per row
    return lp.gather(-1, first.unsqueeze(-1)).squeeze(-1)


def npo(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative preference optimisation: -(2/beta) log sigmoid(-beta (log p - log p_ref)).

    Bounded, unlike gradient ascent: the push fades once the answer is already unlikely.
    """
    return (-2.0 / beta * F.logsigmoid(-beta * (logp - ref_logp))).mean()


def margin_below(logp: torch.Tensor, ref_logp: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge: mean of max(0, log p - (log p_ref - margin)); zero (and no gradient) once log p is `margin`
    nats below the reference, so it moves the answer no further than asked."""
    return F.relu(logp - (ref_logp - margin)).mean()


def gradient_ascent(logp: torch.Tensor) -> torch.Tensor:
    """Maximise the answer's negative log-likelihood (unbounded)."""
    return logp.mean()


def cross_entropy(model, batch: AnswerBatch) -> torch.Tensor:
    """Mean over samples of the summed NLL of the target tokens (labels from the attention mask)."""
    return -token_logprobs(model, batch).sum(-1).mean()


def preference_kl(adapted: torch.Tensor, base: torch.Tensor, drop: list[int]) -> torch.Tensor:
    """Mean over prompts of KL(base || adapted) between the (B, C) candidate distributions with the concept's
    columns `drop` removed and the rest renormalised: the adapter may move the concept's own log-prob
    freely (it is not in the term), but not the model's preference among the other titles."""
    return kl_remaining(base, adapted, drop).mean()


def _per_sample_mean(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """values: (N,) at the True positions of `where` (B, T), row-major -> mean per sample, then over samples."""
    sample = where.nonzero()[:, 0]  # (N,) batch index of each position
    sums = torch.zeros(where.shape[0], dtype=values.dtype, device=values.device).index_add(0, sample, values)
    return (sums / where.sum(1).clamp(min=1)).mean()


def kl_to_base(model, batch: AnswerBatch, base_logprobs: list[torch.Tensor],
               exclude_first: torch.Tensor | None = None) -> torch.Tensor:
    """KL(base || adapted) at the answer positions: mean over a sample's positions, then over samples.

    exclude_first: token ids left out of both distributions (each renormalised over the rest) at each
    sample's FIRST answer position, unless the id is that sample's own first answer token. With the
    concept's first answer tokens here, the anchor keeps how a retain question's answer starts without
    keeping the concept's own probability on it (a base model that answers the concept to a neighbour
    question would otherwise be held to that answer).
    """
    _, head = decoder_and_head(model)
    hidden = hidden_states(model, batch.input_ids, batch.attention_mask, batch.start_layer,
                           batch.start_hidden)  # (B, T, H)
    where = batch.target_mask.bool() & batch.attention_mask.bool()
    logq = head(hidden[where]).float().log_softmax(-1)  # (N, V) adapted
    logp = torch.cat(base_logprobs).to(logq.device)  # (N, V) base, same order (row-major over batch)
    if exclude_first is not None and exclude_first.numel():
        drop = _first_position_drop(batch, where, exclude_first.to(logq.device), logq.shape[-1])  # (N, V)
        logq = logq.masked_fill(drop, -1e9).log_softmax(-1)
        logp = logp.masked_fill(drop, -1e9).log_softmax(-1)
    return _per_sample_mean((logp.exp() * (logp - logq)).sum(-1), where)


def _first_position_drop(batch: AnswerBatch, where: torch.Tensor, ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """(N, V) True at (each sample's first answer position, an id of `ids` that is not the token it predicts)."""
    first = (where & (where.int().cumsum(-1) == 1))[where]  # (N,) the first answer position of its sample
    own = batch.targets.to(where.device)[where]  # (N,) the token each position predicts
    drop = torch.zeros(first.shape[0], vocab, dtype=torch.bool, device=where.device)
    drop[:, ids] = True
    drop &= first.unsqueeze(-1)
    drop[torch.arange(first.shape[0], device=where.device), own] = False
    return drop


def rest_kl_at_start(start_logq: torch.Tensor, base_start: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Mean over samples of KL(base || adapted) over the vocabulary where each answer starts, the ids `drop`
    (the concept's first answer tokens) removed from both and the rest renormalised.

    start_logq, base_start: (B, V) the adapted model's (`answer_first_and_start`) and the base's log-softmax
    there. The adapter may lower the concept's start freely (it is not in the term), but not reshuffle what
    else the model would say there.
    """
    removed = torch.zeros(start_logq.shape[-1], dtype=torch.bool, device=start_logq.device)
    removed[drop.to(start_logq.device)] = True
    logq = start_logq.masked_fill(removed, -1e9).log_softmax(-1)
    logp = base_start.to(start_logq.device).masked_fill(removed, -1e9).log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1).mean()


def residual_at(model, batch: AnswerBatch, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H) residual stream after `layer` at the answer-predicting positions (differentiable), and `where`."""
    with capture(model, [resid_hook_name(layer)], keep_grad=True) as cache:
        hidden_states(model, batch.input_ids, batch.attention_mask, batch.start_layer, batch.start_hidden)
    where = batch.target_mask.bool() & batch.attention_mask.bool()
    return cache[resid_hook_name(layer)].to(where.device)[where], where


def rmu_forget(model, batch: AnswerBatch, layer: int, control: torch.Tensor) -> torch.Tensor:
    """Representation misdirection: push the layer's residual towards a fixed random vector."""
    h, where = residual_at(model, batch, layer)
    return _per_sample_mean((h - control.to(h.device)).square().mean(-1), where)


def rmu_retain(model, batch: AnswerBatch, layer: int, base_resid: list[torch.Tensor]) -> torch.Tensor:
    h, where = residual_at(model, batch, layer)
    return _per_sample_mean((h - torch.cat(base_resid).to(h.device)).square().mean(-1), where)
