"""One forward + one backward per batch gives every sample's exact neuron gradients.

The batch loss is the SUM of per-sample answer losses L_n = -log p(answer_n | prompt_n) (not a mean
over tokens): samples do not interact, so d(sum)/d(a_n) = d(L_n)/d(a_n). The model stays in eval
mode, without gradient checkpointing; base weights are frozen, so the backward computes activation
gradients only (no weight gradients) and starts at the first requested layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from agmask.attribution.registry import SCORES
from agmask.errors import StageError
from agmask.models.checkpointing import is_active as checkpointing_active
from agmask.probing import capture, mlp_hook_name
from agmask.progress import Advance
from agmask.scoring import collate_answers, prefix_for
from agmask.scoring.logprobs import token_logprobs


@dataclass
class NeuronStats:
    """Sums over samples; `mean(name)` divides by the sample count."""

    n: int = 0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # score name -> (L, I)
    grad_norm: torch.Tensor | None = None  # (L,) sum over samples of ||dL_n/da||
    act_mean: torch.Tensor | None = None  # (L, I) sum over samples of the mean answer-position activation
    per_sample: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # optional (B, L, I) chunks

    def add(self, name: str, value: torch.Tensor) -> None:
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def mean(self, name: str) -> torch.Tensor:
        return self.sums[name] / max(self.n, 1)

    @property
    def layer_sensitivity(self) -> torch.Tensor:
        return self.grad_norm / max(self.n, 1)  # (L,)

    @property
    def activation_mean(self) -> torch.Tensor:
        return self.act_mean / max(self.n, 1)  # (L, I)


def neuron_stats(model: nn.Module, tokenizer, spec, set_name: str, items: list, batch_size: int = 8,
                 layers: list[int] | None = None, keep_per_sample: bool = False,
                 advance: Advance | None = None) -> NeuronStats:
    """Scores of every neuron of `layers` (default all) on a prompt set; shapes (L, intermediate)."""
    if not items:
        raise StageError(f"prompt set {set_name} is empty: nothing to attribute (add items to the concept file)")
    if checkpointing_active(model):
        raise StageError("attribution needs exact activation gradients: turn gradient checkpointing off first")
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers)) if layers is None else layers
    names = [mlp_hook_name(i) for i in layers]
    device = next(model.parameters()).device
    stats = NeuronStats()
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        batch = collate_answers(tokenizer, [prefix_for(tokenizer, spec, set_name, it.prompt) for it in chunk],
                                [spec.answers_for(it)[0] for it in chunk]).to(device)
        mask = (batch.target_mask * batch.attention_mask).float()  # (B, T) real answer-predicting positions
        with torch.enable_grad(), capture(model, names, keep_grad=True) as cache:
            loss = -token_logprobs(model, batch).sum()  # SUM over samples and answer tokens
            loss.backward()
            per_layer = {name: {} for name in SCORES}
            norms, acts = [], []
            for name in names:
                a, g = cache[name].detach().float(), cache[name].grad.float()  # (B, T, I)
                for score, fn in SCORES.items():
                    per_layer[score][name] = fn(a, g, mask)  # (B, I)
                norms.append((g.square() * mask[..., None]).sum((1, 2)).sqrt())  # (B,)
                acts.append((a * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1))  # (B, I)
        for score in SCORES:
            stacked = torch.stack([per_layer[score][n] for n in names], dim=1)  # (B, L, I)
            stats.add(score, stacked.sum(0).cpu())
            if keep_per_sample:
                stats.per_sample.setdefault(score, []).append(stacked.cpu())
        norm = torch.stack(norms, dim=1).sum(0).cpu()  # (L,)
        act = torch.stack(acts, dim=1).sum(0).cpu()  # (L, I)
        stats.grad_norm = norm if stats.grad_norm is None else stats.grad_norm + norm
        stats.act_mean = act if stats.act_mean is None else stats.act_mean + act
        stats.n += len(chunk)
        if advance:
            advance(len(chunk))
    return stats
