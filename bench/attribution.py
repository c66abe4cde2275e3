"""Cost of attribution (`neuron_stats`: one forward + one backward per batch) vs a plain batched forward.

    python bench/attribution.py [--model embedded:smollm2-135m-instruct] [--set forget_train]
                                [--items 24] [--batch 8] [--repeats 3] [--device cpu]

Three timings over the same prompts (the concept's `--set`, prompt + lead + first answer alias):
  forward    one batched forward pass, no gradients (hidden states + lm_head at the answer positions,
             i.e. the answer log-probs), batch `--batch`
  batched    neuron_stats with batch `--batch` (every layer's saliency and Fisher)
  per-prompt neuron_stats with batch 1
Prints each (best of `--repeats`), attribution / forward (target <= 3x), batched vs per-prompt speed,
and the agreement of the two attributions: max |difference| of the per-sample scores, absolute and
relative to the largest score.
"""
from __future__ import annotations

import argparse
import time

import torch


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--concept", default="inception")
    ap.add_argument("--set", dest="set_name", default="forget_train")
    ap.add_argument("--items", type=int, default=24, help="prompts (the attribute stage's demo preset uses 24)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()

    from agmask.attribution import SCORES, neuron_stats
    from agmask.concepts import load_concept
    from agmask.models import load
    from agmask.scoring import collate_answers, prefix_for
    from agmask.scoring.logprobs import answer_logprobs

    spec = load_concept(args.concept).spec
    model, tok, info = load(args.model, device=args.device, dtype=args.dtype)
    items = spec.items(args.set_name)[: args.items]
    device = next(model.parameters()).device
    batches = [collate_answers(tok, [prefix_for(tok, spec, args.set_name, it) for it in items[lo: lo + args.batch]],
                               [spec.answers_for(it)[0] for it in items[lo: lo + args.batch]]).to(device)
               for lo in range(0, len(items), args.batch)]
    n_tokens = sum(int(b.attention_mask.sum()) for b in batches)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    @torch.no_grad()
    def forward():
        out = torch.cat([answer_logprobs(model, b) for b in batches])
        sync()
        return out

    def attribute(batch_size: int):
        def run():
            stats = neuron_stats(model, tok, spec, args.set_name, items, batch_size=batch_size, keep_per_sample=True)
            sync()
            return stats
        return run

    forward()  # warm-up
    t_fwd, _ = best_of(args.repeats, forward)
    t_batched, batched = best_of(args.repeats, attribute(args.batch))
    t_single, single = best_of(max(1, args.repeats - 1), attribute(1))

    diff, scale = 0.0, 0.0
    for name in SCORES:
        a, b = torch.cat(batched.per_sample[name]), torch.cat(single.per_sample[name])  # (N, L, I)
        diff = max(diff, (a - b).abs().max().item())
        scale = max(scale, b.abs().max().item())
    print(f"{args.model} ({info.num_parameters / 1e6:.0f}M, {info.dtype}, {args.device}, {torch.get_num_threads()} "
          f"threads): {len(items)} prompts of {args.set_name}, {n_tokens} tokens, batch {args.batch}, "
          f"{info.num_layers} layers x {info.intermediate_size} neurons, best of {args.repeats}")
    print(f"{'pass':<34} {'seconds':>8} {'x forward':>10}")
    for label, t in (("batched forward (answer log-probs)", t_fwd), (f"attribution, batch {args.batch}", t_batched),
                     ("attribution, per prompt (batch 1)", t_single)):
        print(f"{label:<34} {t:8.2f} {t / t_fwd:10.2f}")
    print(f"attribution / forward: {t_batched / t_fwd:.2f}x (target <= 3x)")
    print(f"batched vs per-prompt attribution: {t_single / t_batched:.2f}x faster")
    print(f"agreement of per-sample scores ({', '.join(SCORES)}): max |diff| {diff:.2e} "
          f"(relative to the largest score {scale:.2e}: {diff / max(scale, 1e-30):.1e})")


if __name__ == "__main__":
    main()
