"""One trainer for every method: seeded batches, AdamW, clipping, data parallel through accelerate.

Every process computes the same global batch indices and takes its shard (`idx[rank::world]`);
loss terms are means over samples, so each shard's loss is scaled by shard/global size and the
gradients are summed across processes (torch.distributed via accelerate): the update equals the
one-process update on the whole batch. References (the model before this adapter trains: its
answer log-probs on forget prompts, its distributions on retain prompts) are computed once, at
step 0, when the new adapter is still the identity (LoRA B is zero at init).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from agmask import distributed
from agmask.lora import MaskedAdapter, trainable_parameters
from agmask.models.checkpointing import activation_checkpointing
from agmask.progress import SILENT, Reporter
from agmask.unlearn import data
from agmask.unlearn.methods import Method


@dataclass
class StepInputs:
    model: torch.nn.Module
    forget: object  # AnswerBatch
    forget_ref: torch.Tensor | None  # (b,) reference summed answer log-probs
    target: object | None
    retain: object
    retain_dist: list | None
    retain_resid: list | None
    rmu_layer: int
    rmu_control: torch.Tensor | None
    forget_first_ref: torch.Tensor | None = None  # (b,) reference log-probs of the answers' first tokens
    concept_first_tokens: torch.Tensor | None = None  # ids that start the concept's answers (retain_without_concept_start)


def _accelerator(device: str):
    from accelerate import Accelerator

    return Accelerator(cpu=distributed.use_cpu(device))  # the same choice as distributed.init


def _shard(indices: list[int], rank: int, world: int) -> list[int]:
    return indices[rank::world]


def _all_reduce_grads(params: list[torch.nn.Parameter], accelerator) -> None:
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def _global_terms(terms: dict, share: float, world: int) -> dict[str, float]:
    """Loss terms of the whole global batch: each process's shard means, weighted by its share, summed."""
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
    if world > 1:
        values = distributed.all_reduce_sum(values * share)
    return dict(zip(terms, values.tolist()))


def train(adapter: MaskedAdapter, method: Method, tokenizer, spec, conf, seed: int = 0, device: str = "cpu",
          reporter: Reporter = SILENT, on_step: Callable[[dict], None] | None = None,
          accelerator=None, gradient_checkpointing: bool = False) -> list[dict]:
    """Train `adapter` with `method`'s loss for conf.steps steps (or until early stop). Returns the log rows.

    gradient_checkpointing: recompute decoder layers in the backward (less memory, same loss).
    """
    accelerator = accelerator or _accelerator(device)
    rank, world = accelerator.process_index, accelerator.num_processes
    model = adapter.model
    model.eval()  # no dropout; LoRA dropout is 0 anyway
    dev = next(model.parameters()).device
    forget_items = spec.forget_train[: conf.max_forget or None]
    retain_items = spec.retain_train
    every_lead = data.training_leads(spec, forget_items, retain_items)
    leads = every_lead if conf.forget_all_leads else None
    forget = data.forget_examples(tokenizer, spec, forget_items, leads)
    wants_target = "target" in method.needs or ("target_if_weighted" in method.needs and conf.target_weight > 0)
    # the refusal target has no lead: the same example per item, repeated to line up with `forget`
    target = data.target_examples(tokenizer, spec, forget_items) * max(1, len(leads or ())) if wants_target else None
    retain = data.retain_examples(tokenizer, spec, retain_items, every_lead if conf.retain_all_leads else None)
    concept_first = data.first_answer_tokens(tokenizer, forget) if conf.retain_without_concept_start else None

    # The layers below the adapter are frozen: their output for each training prompt never changes, so
    # it is computed once and every step (and the references below) runs only the layers from the first
    # adapted one up.
    first = min(adapter.layers) if conf.cache_frozen_layers and adapter.layers else 0
    starts = {}
    if first > 0:
        starts = {"forget": data.layer_inputs(model, tokenizer, forget, first),
                  "retain": data.layer_inputs(model, tokenizer, retain, first)}
        if target is not None:
            starts["target"] = data.layer_inputs(model, tokenizer, target, first)

    def start_of(kind: str):
        return (first, starts[kind]) if starts else None

    # references from the model as it is now: the new adapter is still the identity
    forget_refs = data.base_answer_logprobs(model, tokenizer, forget, start=start_of("forget")) \
        if "forget_ref" in method.needs else None
    retain_dist = data.base_answer_distributions(model, tokenizer, retain, start=start_of("retain")) \
        if "retain_dist" in method.needs else None
    rmu_layer = max(adapter.layers)
    retain_resid = data.base_residuals(model, tokenizer, retain, rmu_layer) if "retain_resid" in method.needs else None

    def batch(kind: str, examples: list, idx: list[int]):
        start = (first, [starts[kind][i] for i in idx]) if starts else None
        return data.collate(tokenizer, [examples[i] for i in idx], dev, start)

    gen = torch.Generator().manual_seed(seed)
    control = None
    if method.name == "rmu":
        hidden = model.get_base_model().config.hidden_size
        control = torch.rand(hidden, generator=gen)
        control = conf.rmu_steering * control / control.norm()

    params = trainable_parameters(adapter)
    opt = torch.optim.AdamW(params, lr=conf.lr, weight_decay=conf.weight_decay)
    f_order = torch.randperm(len(forget), generator=gen).tolist()
    r_order = torch.randperm(len(retain), generator=gen).tolist()
    rows: list[dict] = []
    recent: list[float] = []
    start = time.perf_counter()
    with reporter.task(f"unlearning ({method.name})", conf.steps) as advance, \
            activation_checkpointing(model, gradient_checkpointing):
        for step in range(conf.steps):
            f_idx = [f_order[(step * conf.batch_size + i) % len(forget)] for i in range(conf.batch_size)]
            r_idx = [r_order[(step * conf.batch_size + i) % len(retain)] for i in range(conf.batch_size)]
            f_local, r_local = _shard(f_idx, rank, world), _shard(r_idx, rank, world)
            inputs = StepInputs(
                model=model,
                forget=batch("forget", forget, f_local),
                forget_ref=forget_refs[f_local, 0].to(dev) if forget_refs is not None else None,
                forget_first_ref=forget_refs[f_local, 1].to(dev) if forget_refs is not None else None,
                target=batch("target", target, f_local) if target is not None else None,
                retain=batch("retain", retain, r_local),
                retain_dist=[retain_dist[i] for i in r_local] if retain_dist is not None else None,
                retain_resid=[retain_resid[i] for i in r_local] if retain_resid is not None else None,
                rmu_layer=rmu_layer, rmu_control=control, concept_first_tokens=concept_first,
            )
            with torch.enable_grad():
                terms = method.loss(inputs, conf)
                (terms["loss"] * (len(f_local) / conf.batch_size)).backward()
            _all_reduce_grads(params, accelerator)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, conf.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            logged = _global_terms(terms, len(f_local) / conf.batch_size, world)
            row = {"step": step + 1, **logged, "grad_norm": float(grad_norm),
                   "seconds": round(time.perf_counter() - start, 2)}
            rows.append(row)
            if on_step and accelerator.is_main_process:
                on_step(row)
            advance(1)
            if "forget_logratio" in terms:
                # every process must take the same decision: average the criterion over processes
                ratio = accelerator.reduce(terms["forget_logratio"].detach().reshape(1), reduction="mean")
                recent = (recent + [float(ratio)])[-3:]
                if conf.early_stop_nats > 0 and len(recent) == 3 and sum(recent) / 3 <= -conf.early_stop_nats:
                    reporter.log(f"early stop at step {step + 1}: forget log-ratio {sum(recent) / 3:.2f} nats")
                    break
    return rows
