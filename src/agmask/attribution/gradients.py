"""One forward + one backward per batch gives every sample's exact neuron gradients.

The batch loss is the SUM of per-sample answer losses L_n = -log p(answer_n | prompt_n) (not a mean
over tokens): samples do not interact, so d(sum)/d(a_n) = d(L_n)/d(a_n). The model stays in eval
mode, without gradient checkpointing; base weights are frozen, so the backward computes activation
gradients only (no weight gradients) and starts at the first requested layer.

The loss always sits on the answer; `positions` chooses where a*g and g^2 are summed (and the layer
gradient norm and the mean activation taken): `answer` (the answer-predicting positions), `all`
(every real token) or `subject` (the prompt's own tokens); see `attribution.positions`.

Data parallel (`parallel=True` under a multi-process launch): each process attributes its own block
of the prompts and the sums (scores, gradient norms, activations, sample count) are all-reduced, so
every process ends with the statistics of the whole set; per-sample chunks are gathered in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from agmask import distributed
from agmask.attribution.positions import check_positions, position_mask
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
    act_mean: torch.Tensor | None = None  # (L, I) sum over samples of the mean activation over the positions
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


def attribution_rows(spec, items: list, all_aliases: bool = False) -> list[tuple]:
    """(item, answer) pairs attributed: each item with its first answer alias, or with every alias."""
    return [(it, a) for it in items for a in (spec.answers_for(it) if all_aliases else spec.answers_for(it)[:1])]


def neuron_stats(model: nn.Module, tokenizer, spec, set_name: str, items: list, batch_size: int = 8,
                 layers: list[int] | None = None, keep_per_sample: bool = False,
                 advance: Advance | None = None, parallel: bool = False, positions: str = "answer",
                 all_aliases: bool = False) -> NeuronStats:
    """Scores of every neuron of `layers` (default all) on a prompt set; shapes (L, intermediate).

    positions: where the scores are summed (answer | all | subject); the loss is on the answer either way.
    all_aliases: one sample per (item, alias) instead of per item with its first alias (`attribution_rows`);
    `advance` counts samples.
    parallel: split the items over the processes of a multi-process launch and all-reduce the sums
    (every process must call it); a no-op with one process.
    """
    if not items:
        raise StageError(f"prompt set {set_name} is empty: nothing to attribute (add items to the concept file)")
    if checkpointing_active(model):
        raise StageError("attribution needs exact activation gradients: turn gradient checkpointing off first")
    check_positions(positions)
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers)) if layers is None else layers
    names = [mlp_hook_name(i) for i in layers]
    device = next(model.parameters()).device
    rows = attribution_rows(spec, items, all_aliases)
    if parallel and distributed.world_size() > 1:
        local = _local_stats(model, tokenizer, spec, set_name, distributed.shard(rows), batch_size, names,
                             keep_per_sample, advance, device, positions)
        return _all_reduced(local, len(layers), model.config.intermediate_size, keep_per_sample)
    return _local_stats(model, tokenizer, spec, set_name, rows, batch_size, names, keep_per_sample, advance, device,
                        positions)


def _all_reduced(local: NeuronStats, n_layers: int, width: int, keep_per_sample: bool) -> NeuronStats:
    """Sums over every process (sums of sums, and of counts); a process may have had no items."""
    out = NeuronStats()
    for score in SCORES:
        out.sums[score] = distributed.all_reduce_sum(local.sums.get(score, torch.zeros(n_layers, width)))
    out.grad_norm = distributed.all_reduce_sum(local.grad_norm if local.grad_norm is not None else torch.zeros(n_layers))
    out.act_mean = distributed.all_reduce_sum(local.act_mean if local.act_mean is not None
                                              else torch.zeros(n_layers, width))
    out.n = int(distributed.all_reduce_sum(torch.tensor([local.n], dtype=torch.float64)).item())
    if keep_per_sample:
        for score in SCORES:  # contiguous shards: chunks in rank order are in item order
            out.per_sample[score] = distributed.gather(local.per_sample.get(score, []))
    return out


def _local_stats(model: nn.Module, tokenizer, spec, set_name: str, rows: list[tuple], batch_size: int,
                 names: list[str], keep_per_sample: bool, advance: Advance | None, device, positions: str) -> NeuronStats:
    stats = NeuronStats()
    for lo in range(0, len(rows), batch_size):
        chunk = [it for it, _ in rows[lo : lo + batch_size]]
        answers = [a for _, a in rows[lo : lo + batch_size]]
        prefixes = [prefix_for(tokenizer, spec, set_name, it) for it in chunk]
        batch = collate_answers(tokenizer, prefixes, answers)
        mask = position_mask(tokenizer, positions, batch, [it.prompt for it in chunk],
                             [p + a for p, a in zip(prefixes, answers)]).to(device)  # (B, T) summed positions
        batch = batch.to(device)
        with torch.enable_grad(), capture(model, names, keep_grad=True) as cache:
            loss = -token_logprobs(model, batch).sum()  # SUM over samples and answer tokens
            loss.backward()
            per_layer = {name: {} for name in SCORES}
            norms, acts = [], []
            for name in names:
                # (B, T, I); under device_map="auto" layers sit on several GPUs: bring them to the inputs' device
                a, g = cache[name].detach().float().to(device), cache[name].grad.float().to(device)
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
