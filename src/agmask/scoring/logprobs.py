"""Answer log-probabilities, differentiable (training, attribution) and cached (evaluation).

`answer_logprobs` is the loss everywhere: the batch loss is the SUM of per-sample negative answer
log-probs, so one backward gives each sample's exact gradients (no mean over padded tokens).
Logits are computed only at the answer-predicting positions: the lm_head is ~27% of a 0.5B
model's FLOPs per token and most positions are prompt.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from agmask.models.arch import base_causal_lm, skip_layers
from agmask.scoring.encode import AnswerBatch


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer body (ending with the final norm) and the lm_head of a (PEFT-wrapped) CausalLM."""
    base = base_causal_lm(model)
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, start_layer: int = 0,
                  start_hidden: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, H) last hidden state after the final norm.

    With `start_hidden` (the residual stream entering `start_layer`), layers below `start_layer` are
    skipped: their output is given. `position_ids` default to the (B, T) attention mask's; a (B, 1, T, T)
    mask (packed sequences) comes with its own.
    """
    body, _ = decoder_and_head(model)
    positions = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
    if start_hidden is None or start_layer == 0:
        return body(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                    use_cache=False).last_hidden_state
    with skip_layers(model, start_layer):
        return body(inputs_embeds=start_hidden, attention_mask=attention_mask, position_ids=positions,
                    use_cache=False).last_hidden_state


def answer_log_softmax(model: nn.Module, batch: AnswerBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) log-softmax at every answer-predicting position (row-major over the batch; N = number of answer
    tokens in the batch) and `where` (B, T), True at those positions."""
    _, head = decoder_and_head(model)
    hidden = hidden_states(model, batch.input_ids, batch.attention_mask, batch.start_layer, batch.start_hidden)
    where = batch.target_mask.bool() & batch.attention_mask.bool()  # hidden: (B, T, H)
    return head(hidden[where]).float().log_softmax(-1), where


def answer_token_logprobs(batch: AnswerBatch, log_softmax: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(B, T) the log-prob of each answer token, from `answer_log_softmax`'s output; 0 elsewhere. A position in
    `batch.closing` takes the log of the summed probability of every token that closes the answer."""
    lp = log_softmax.gather(-1, batch.targets[where].unsqueeze(-1)).squeeze(-1)  # (N,)
    if batch.closing:
        flat = where.flatten().long().cumsum(0) - 1  # (B * T,) each answer position's row in log_softmax
        rows = [int(flat[i * where.shape[1] + t]) for i, t, _ in batch.closing]
        ends = torch.stack([log_softmax[r, torch.tensor(ids, device=log_softmax.device)].logsumexp(-1)
                            for r, (_, _, ids) in zip(rows, batch.closing)])
        lp = lp.index_put((torch.tensor(rows, device=lp.device),), ends)
    out = torch.zeros(batch.input_ids.shape, dtype=lp.dtype, device=lp.device)
    out[where] = lp
    return out


def token_logprobs(model: nn.Module, batch: AnswerBatch) -> torch.Tensor:
    """(B, T) log-prob of the next token at every answer-predicting position, 0 elsewhere."""
    return answer_token_logprobs(batch, *answer_log_softmax(model, batch))


def answer_logprobs(model: nn.Module, batch: AnswerBatch) -> torch.Tensor:
    """(B,) summed answer log-prob per sample (differentiable)."""
    return token_logprobs(model, batch).sum(-1)
