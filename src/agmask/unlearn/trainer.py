"""One trainer for every method: seeded batches, AdamW, clipping, data parallel through accelerate.

The method's `prepare` builds its sources and loss (a `Plan`, see `agmask.unlearn.sources`) once, at
step 0, while the new adapter is still the identity (LoRA B is zero at init). Every process computes
the same global batch indices per source and takes its shard (`idx[rank::world]`). The loss runs as
the forward of a module that `Accelerator.prepare_model` wraps in DDP when several processes run, so
DDP averages the gradients in the backward; each shard's loss is scaled by world * shard / batch, so
the average equals the one-process gradient of the whole batch (loss terms are means over samples).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn
from transformers import get_scheduler

from agmask import distributed
from agmask.errors import StageError
from agmask.lora import MaskedAdapter, trainable_parameters
from agmask.models.checkpointing import activation_checkpointing
from agmask.progress import SILENT, Reporter
from agmask.unlearn.methods import Method
from agmask.unlearn.sources import Batch, Loss, Plan, Setup, Source


class _StepLoss(nn.Module):
    """The plan's loss as a module's forward: DDP syncs the gradients of what runs inside its forward."""

    def __init__(self, model: nn.Module, loss: Loss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batches: dict[str, Batch]) -> dict[str, torch.Tensor]:
        return self.loss(self.model, batches)


def _draw_orders(sources: dict[str, Source], gen: torch.Generator) -> dict[str, list[int]]:
    """One seeded permutation per draw key, in the order the sources first use it."""
    orders: dict[str, list[int]] = {}
    for name, source in sources.items():
        if not source.examples:
            raise StageError(f"unlearning source {name!r} has no examples: check the concept's training sets")
        if source.draw not in orders:
            orders[source.draw] = torch.randperm(len(source.examples), generator=gen).tolist()
        elif len(orders[source.draw]) != len(source.examples):
            raise StageError(f"unlearning source {name!r} has {len(source.examples)} examples but shares draw "
                             f"{source.draw!r} with a source of {len(orders[source.draw])}")
    return orders


def _draw_sizes(sources: dict[str, Source], batch_size: int, world: int) -> dict[str, int]:
    """Examples per step of each draw key (a source's own `batch_size`, else `batch_size`), checked so that
    every process gets at least one example of each and the same share of every draw's batch (the loss
    terms are per-source means: equal shares make the shards' gradients add up to the whole batch's)."""
    sizes: dict[str, int] = {}
    options: dict[str, str] = {}
    for name, source in sources.items():
        size = source.batch_size or batch_size
        option = f"unlearn.{source.batch_option if source.batch_size else 'batch_size'}"
        if sizes.setdefault(source.draw, size) != size:
            raise StageError(f"unlearning source {name!r} draws {size} examples per step but shares draw "
                             f"{source.draw!r} with a source that draws {sizes[source.draw]}")
        options.setdefault(source.draw, option)
    for draw, size in sizes.items():
        if size < world:
            raise StageError(f"{options[draw]} is {size} but {world} processes train: each needs at least one "
                             f"example per step; set --set {options[draw]}={world} or more")
    shares = {draw: tuple(len(range(rank, size, world)) / size for rank in range(world)) for draw, size in sizes.items()}
    if len(set(shares.values())) > 1:
        listed = ", ".join(sorted({f"{options[draw]}={size}" for draw, size in sizes.items()}))
        raise StageError(f"{listed} split unevenly over {world} processes (each process must get the same share "
                         f"of every batch): make each a multiple of {world}")
    return sizes


def _step_indices(order: list[int], step: int, batch_size: int) -> list[int]:
    """The global batch of `step`: the next `batch_size` entries of the permutation, wrapping around."""
    return [order[(step * batch_size + i) % len(order)] for i in range(batch_size)]


def _global_terms(terms: dict, share: float, accelerator) -> dict[str, float]:
    """Loss terms of the whole global batch: each process's shard means, weighted by its share, summed."""
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values * share, reduction="sum")
    return dict(zip(terms, values.tolist()))


def train(adapter: MaskedAdapter, method: Method, tokenizer, spec, conf, seed: int = 0, device: str = "cpu",
          reporter: Reporter = SILENT, on_step: Callable[[dict], None] | None = None,
          gradient_checkpointing: bool = False) -> list[dict]:
    """Train `adapter` with `method`'s loss for conf.steps steps (or until early stop). Returns the log rows.

    gradient_checkpointing: recompute decoder layers in the backward (less memory, same loss).
    """
    accelerator = distributed.accelerator(device)
    rank, world = accelerator.process_index, accelerator.num_processes
    if conf.batch_size < world:
        raise StageError(f"unlearn.batch_size is {conf.batch_size} but {world} processes train: each needs at "
                         f"least one example per step; set --set unlearn.batch_size={world} or more")
    model = adapter.model
    model.eval()  # no dropout; LoRA dropout is 0 anyway
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    # The layers below the adapter are frozen: their output for each training prompt never changes, so
    # the sources compute it once and every step runs only the layers from the first adapted one up.
    cached = min(adapter.layers) if conf.cache_frozen_layers and adapter.layers else 0
    plan: Plan = method.prepare(Setup(model, tokenizer, spec, conf, list(adapter.layers), gen, cached, reporter))
    orders = _draw_orders(plan.sources, gen)
    sizes = _draw_sizes(plan.sources, conf.batch_size, world)

    params = trainable_parameters(adapter)
    opt = torch.optim.AdamW(params, lr=conf.lr, weight_decay=conf.weight_decay)
    schedule = get_scheduler(conf.lr_schedule, opt, num_warmup_steps=0, num_training_steps=conf.steps)
    rows: list[dict] = []
    recent: list[float] = []
    start = time.perf_counter()
    # DDP-wrapped with several processes, the module itself with one; the model stays on its device. The
    # accelerator and the wrapper are local: both go (DDP's gradient hooks with them) when train returns.
    step_loss = accelerator.prepare_model(_StepLoss(model, plan.loss), device_placement=False)
    with reporter.task(f"unlearning ({method.name})", conf.steps) as advance, \
            activation_checkpointing(model, gradient_checkpointing):
        for step in range(conf.steps):
            local = {draw: _step_indices(order, step, sizes[draw])[rank::world] for draw, order in orders.items()}
            batches = {name: source.batch(local[source.draw], tokenizer, dev) for name, source in plan.sources.items()}
            draw = next(iter(local))
            share = len(local[draw]) / sizes[draw]  # the same for every draw (checked by _draw_sizes)
            with torch.enable_grad():
                terms = step_loss(batches)
                accelerator.backward(terms["loss"] * (share * world))  # DDP averages over the processes
            grad_norm = accelerator.clip_grad_norm_(params, conf.max_grad_norm)
            lr = schedule.get_last_lr()[0]
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
            logged = _global_terms(terms, share, accelerator)
            row = {"step": step + 1, **logged, "grad_norm": float(grad_norm),
                   **({"lr": lr} if conf.lr_schedule != "constant" else {}),
                   "seconds": round(time.perf_counter() - start, 2)}
            rows.append(row)
            if on_step and accelerator.is_main_process:
                on_step(row)
            advance(1)
            if plan.early_stop_term and conf.early_stop_nats > 0:
                # every process must take the same decision: average the criterion over processes
                value = accelerator.reduce(terms[plan.early_stop_term].detach().reshape(1), reduction="mean")
                recent = (recent + [float(value)])[-3:]
                if len(recent) == 3 and sum(recent) / 3 <= -conf.early_stop_nats:
                    reporter.log(f"early stop at step {step + 1}: {plan.early_stop_term} {sum(recent) / 3:.2f} nats")
                    break
    return rows
