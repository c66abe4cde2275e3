"""Training-step cost of the recommendation terms (issue 17 item 4): masked_lora's default loss (NPO on the
forget prompts + KL on the retain prompts) alone, and with the recommend_train terms (NPO on the concept's
title + the KL over the other candidates) at several recommend batch sizes.

    python bench/recommend_step.py [--model embedded:qwen2.5-coder-0.5b-instruct] [--concept inception]
                                   [--layers 4] [--batch 4] [--recommend 1,2,4] [--steps 5] [--unpacked]
                                   [--r 8] [--device cpu]

A step is what the trainer does: collate each source's batch (the next indices of a fixed order), the loss
forward, backward, clipping and AdamW, with the frozen layers below the first adapted one cached as the
trainer caches them. Each recommend_train prompt is ONE packed sequence (prompt + lead once, the titles as a
trie after it, `agmask.unlearn.candidates`). `--unpacked` adds, for comparison, the same two terms computed
the plain way: every title its own padded prompt + lead + title sequence (C sequences per prompt). Variants
run in rotating order every round, so load from other processes hits them alike; the ratio to the default
loss is the median over rounds of the back-to-back ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--concept", default="inception")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--layers", type=int, default=4, help="adapted layers (the middle ones)")
    ap.add_argument("--batch", type=int, default=4, help="forget prompts and retain prompts per step (each)")
    ap.add_argument("--recommend", default="1,2,4", help="recommend_train prompts per step, comma separated")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds (after one warm-up round)")
    ap.add_argument("--unpacked", action="store_true", help="also time the titles as separate padded sequences")
    ap.add_argument("--r", type=int, default=8)
    args = ap.parse_args()

    import dataclasses

    from agmask.concepts import load_concept
    from agmask.lora import attach_lora, trainable_parameters
    from agmask.models import load
    from agmask.stages.unlearn import Config
    from agmask.unlearn import get_method
    from agmask.unlearn.candidates import recommend_titles
    from agmask.unlearn.sources import Setup

    spec = load_concept(args.concept).spec
    if not spec.recommend_train:
        raise SystemExit(f"concept {spec.name} has no recommend_train prompts: nothing to time")
    model, tok, info = load(args.model, device=args.device, dtype=args.dtype)
    lo = max(0, info.num_layers // 2 - args.layers // 2)
    layers = list(range(lo, min(info.num_layers, lo + args.layers)))
    adapter = attach_lora(model, None, layers=layers, r=args.r, alpha=16.0, name="bench", seed=0)
    params = trainable_parameters(adapter)
    defaults = dataclasses.replace(Config(), batch_size=args.batch)
    opt = torch.optim.AdamW(params, lr=defaults.lr)
    dev = next(adapter.model.parameters()).device
    method = get_method("masked_lora")
    titles = recommend_titles(spec, all_candidates=True)

    def setup(conf) -> Setup:
        return Setup(adapter.model, tok, spec, conf, layers, torch.Generator().manual_seed(0), cached_layer=min(layers))

    def draw(source, step: int, size: int, group: int = 1):
        """The trainer's batch of `step` (consecutive indices of a fixed order; `group` rows per drawn prompt) and
        its real tokens (packed prompts: their packed length; others: the attention mask)."""
        idx = [(step * size + i) % (len(source.examples) // group) for i in range(size)]
        idx = [p * group + c for p in idx for c in range(group)]
        batch = source.batch(idx, tok, dev)
        if hasattr(batch.tokens, "attention_mask"):
            return batch, int(batch.tokens.attention_mask.sum())
        return batch, sum(len(source.examples[i].ids) for i in idx)

    def plan_variant(plan):
        def batches(step: int) -> dict:  # name -> (Batch, real tokens)
            return {n: draw(s, step, s.batch_size or defaults.batch_size) for n, s in plan.sources.items()}
        return batches, plan.loss

    base_plan = method.prepare(setup(defaults))
    variants = {"default loss": plan_variant(base_plan)}  # name -> (batches(step), loss(model, batches))
    sizes = [int(k) for k in args.recommend.split(",") if k.strip()]
    for k in sizes:
        conf = dataclasses.replace(defaults, recommend_weight=1.0, preference_weight=1.0, recommend_batch_size=k)
        variants[f"+ recommend, {k} per step"] = plan_variant(method.prepare(setup(conf)))
    if args.unpacked:
        plain = setup(defaults).source(_title_examples(tok, spec, titles.names), draw="unpacked")
        for k in sizes:
            variants[f"+ recommend unpacked, {k} per step"] = _unpacked(plan_variant(base_plan)[0], plain, draw, k,
                                                                         titles, defaults)

    tokens_per_step: dict[str, int] = {}

    def step(name: str, i: int) -> float:
        batches_of, loss = variants[name]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        drawn = batches_of(i)
        with torch.enable_grad():
            loss(adapter.model, {n: batch for n, (batch, _) in drawn.items()})["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, defaults.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = time.perf_counter() - t0
        tokens_per_step[name] = sum(n for _, n in drawn.values())
        return elapsed

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        step(n, 0)  # warm-up
    for i in range(args.steps):
        shift = i % len(names)
        for n in names[shift:] + names[:shift]:
            times[n].append(step(n, i + 1))

    print(f"{args.model} ({info.num_parameters / 1e6:.0f}M, {info.dtype}, {args.device}, {torch.get_num_threads()} "
          f"threads); LoRA r={args.r} on layers {layers}, layers below {min(layers)} cached; forget {args.batch} + "
          f"retain {args.batch} prompts per step; {len(titles.names)} candidates per recommend_train prompt; "
          f"{args.steps} rounds")
    print(f"{'variant':<34} {'tokens/step':>11} {'median step s':>14} {'min step s':>11} {'x default':>10}")
    for n in names:
        ratios = sorted(t / b for t, b in zip(times[n], times["default loss"]))
        print(f"{n:<34} {tokens_per_step[n]:11d} {statistics.median(times[n]):14.3f} {min(times[n]):11.3f} "
              f"{statistics.median(ratios):10.2f}")


def _title_examples(tok, spec, names: list[str]) -> list:
    """(prompt + lead, title + closing quote) for every recommend_train prompt and title, prompt-major."""
    from agmask.scoring import prefix_for
    from agmask.scoring.encode import closing_for
    from agmask.unlearn.data import Example

    out = []
    for item in spec.recommend_train:
        close = closing_for(spec.lead_for("recommend_train", item))
        out += [Example(prefix_for(tok, spec, "recommend_train", item), title + close) for title in names]
    return out


def _unpacked(base_batches, plain, draw, k: int, titles, conf):
    """The default loss + the same two recommendation terms, each title scored as its own padded sequence
    (C per prompt); the references are the model's own values at the first call (timing only)."""
    from agmask.unlearn import objectives as obj
    from agmask.unlearn.methods.common import forget_and_retain

    num_titles = len(titles.names)
    refs: list[torch.Tensor] = []

    def batches(step: int) -> dict:
        return {**base_batches(step), "unpacked": draw(plain, step, k, group=num_titles)}

    def loss(model, batches: dict) -> dict:
        terms = forget_and_retain(model, {n: b for n, b in batches.items() if n != "unpacked"}, conf, None)
        logp = obj.answer_logprob(model, batches["unpacked"].tokens).view(-1, num_titles)  # (k, C)
        if not refs:
            refs.append(logp.detach())
        c = titles.concept
        terms["recommend_npo"] = obj.npo(logp[:, c], refs[0][:, c], conf.npo_beta)
        terms["preference_kl"] = obj.preference_kl(logp, refs[0], titles.drop)
        terms["loss"] = terms["loss"] + terms["recommend_npo"] + terms["preference_kl"]
        return terms

    return batches, loss


if __name__ == "__main__":
    main()
