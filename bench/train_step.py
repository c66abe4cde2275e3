"""Training throughput of a masked LoRA step vs a plain (unmasked) LoRA step: same batch, layers, rank, loss.

    python bench/train_step.py [--model embedded:smollm2-135m-instruct] [--layers 4] [--neurons 256]
                               [--batch 8] [--steps 6] [--r 8] [--device cpu]

One step = forward + backward + gradient clipping + AdamW, exactly as the trainer does it, with the
loss of the default method (NPO on the concept's answer after the lead + KL to the base on
retain_train). Both adapters sit on `gate_proj`/`up_proj`/`down_proj` of the same `--layers` middle
layers of two copies of the same model; the masked one allows `--neurons` random units spread over
those layers. Steps alternate masked / plain so that
load from other processes hits both alike; the median step time gives tokens/s (real tokens of the
forget + retain batches); the ratio is the median over back-to-back pairs. The mask's cost target
is under 5%.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--concept", default="inception")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--layers", type=int, default=4, help="adapted layers (the middle ones)")
    ap.add_argument("--neurons", type=int, default=256, help="masked units, spread over the layers")
    ap.add_argument("--batch", type=int, default=8, help="forget prompts and retain prompts per step (each)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant (after one warm-up step)")
    ap.add_argument("--r", type=int, default=8)
    args = ap.parse_args()

    from agmask.concepts import load_concept
    from agmask.lora import attach_lora, trainable_parameters
    from agmask.models import load
    from agmask.unlearn.methods.common import forget_and_retain
    from agmask.lora import merged_delta
    from agmask.stages.unlearn import Config
    from agmask.unlearn import data, get_method
    from agmask.unlearn.sources import Batch

    spec = load_concept(args.concept).spec
    base, tok, info = load(args.model, device=args.device, dtype=args.dtype)
    n_layers, width = info.num_layers, info.intermediate_size
    lo = max(0, n_layers // 2 - args.layers // 2)
    layers = list(range(lo, min(n_layers, lo + args.layers)))
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(n_layers, width, dtype=torch.bool)
    per = max(1, args.neurons // len(layers))
    for layer in layers:
        mask[layer, torch.randperm(width, generator=gen)[:per]] = True

    method = get_method("masked_lora")  # its loss, used for both variants
    defaults = Config()  # the unlearn stage's defaults (lr, npo_beta, weights, clipping)
    dev = next(base.parameters()).device
    forget_ex = data.forget_examples(tok, spec, spec.forget_train[: args.batch])
    retain_ex = data.retain_examples(tok, spec, spec.retain_train[: args.batch])
    forget_refs = data.base_answer_logprobs(base, tok, forget_ex)  # (N, 2): sum, first token
    retain_dist = data.base_answer_distributions(base, tok, retain_ex)
    forget = Batch(data.collate(tok, forget_ex, dev), {"answer_logprob": forget_refs[:, 0].to(dev),
                                                      "first_logprob": forget_refs[:, 1].to(dev)})
    retain = Batch(data.collate(tok, retain_ex, dev), {"distribution": retain_dist})
    n_tokens = int(forget.tokens.attention_mask.sum() + retain.tokens.attention_mask.sum())

    variants = {}
    for name, m in (("masked", mask), ("plain", None)):
        model = copy.deepcopy(base)
        adapter = attach_lora(model, m, layers=layers, r=args.r, alpha=16.0, name="bench", seed=0)
        params = trainable_parameters(adapter)
        variants[name] = (adapter, params, torch.optim.AdamW(params, lr=defaults.lr))

    def step(name: str) -> float:
        adapter, params, opt = variants[name]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with torch.enable_grad():
            terms = forget_and_retain(adapter.model, {"forget": forget, "retain": retain}, defaults, concept_start=None)
            terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, defaults.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    times = {"masked": [], "plain": []}
    step("masked"), step("plain")  # warm-up
    for i in range(args.steps):
        order = ("masked", "plain") if i % 2 == 0 else ("plain", "masked")
        for name in order:
            times[name].append(step(name))

    # the masked adapter's delta stays inside the mask (a sanity check, not a timing)
    adapter = variants["masked"][0]
    outside = 0.0
    for layer in layers:
        keep = mask[layer]
        for which in ("gate", "up"):
            outside = max(outside, merged_delta(adapter.model, layer, which, "bench")[~keep].abs().max().item())
        outside = max(outside, merged_delta(adapter.model, layer, "down", "bench")[:, ~keep].abs().max().item())

    print(f"{args.model} ({info.num_parameters / 1e6:.0f}M, {info.dtype}, {args.device}, "
          f"{torch.get_num_threads()} threads); LoRA r={args.r} on gate/up/down of layers {layers}; "
          f"mask {int(mask.sum())} of {len(layers) * width} units; loss {method.name} (NPO + KL retain); "
          f"{n_tokens} tokens per step (forget {args.batch} + retain {args.batch} prompts)")
    print(f"{'variant':<8} {'median step s':>14} {'min step s':>11} {'tokens/s':>9}")
    rate = {}
    for name in ("plain", "masked"):
        med = statistics.median(times[name])
        rate[name] = n_tokens / med
        print(f"{name:<8} {med:14.3f} {min(times[name]):11.3f} {rate[name]:9.1f}")
    # each pair ran back to back (alternating order), so the pair's ratio cancels most outside load
    pairs = sorted(p / m for m, p in zip(times["masked"], times["plain"]))
    ratio = statistics.median(pairs)
    print(f"masked / plain throughput: {ratio:.3f}, median of {len(pairs)} back-to-back pairs (range {pairs[0]:.3f}-"
          f"{pairs[-1]:.3f}; from the medians {rate['masked'] / rate['plain']:.3f}); mask cost {100 * (1 - ratio):+.1f}% "
          f"(target: under 5%)")
    print(f"max |merged delta| outside the mask after {args.steps + 1} masked steps: {outside:.1e}")


if __name__ == "__main__":
    main()
