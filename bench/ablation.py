"""Causal check of the attribution: zero the top-k combined-score neurons vs k random ones.

    python bench/ablation.py --run-dir runs/demo [--k 100] [--draws 5] [--split-half]

Reads `attribute/scores.safetensors` of a finished run; prints the mean change of the concept's
answer log-prob on forget_eval and of the neighbours' on neighbors, their ratios, and (with
--split-half) the Jaccard overlap of the top-k found on two halves of forget_train (chance ~ k/N).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from agmask.attribution import SCORES, combined_score, neuron_stats, top_neurons
from agmask.attribution.ablation import jaccard, random_like, zero_neurons
from agmask.config import RunConfig
from agmask.files import load_tensors, read_json
from agmask.scoring import item_logprobs
from agmask.session import Session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--split-half", action="store_true")
    ap.add_argument("--max-items", type=int, default=0, help="per evaluation set; 0 = all")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()

    manifest = read_json(args.run_dir / "manifest.json")
    cfg = RunConfig(model=manifest["model"]["spec"], concepts=[manifest["concept"]["source"].removeprefix("shipped:")],
                    run_dir=args.run_dir, seed=manifest["seed"], device=manifest["device"], dtype=manifest["dtype"])
    session = Session.create(cfg)
    model, tok, info = session.model()
    spec = session.spec
    scores = load_tensors(args.run_dir / "attribute" / "scores.safetensors")
    top = [(l, u) for l, u, _ in top_neurons(scores["combined"], args.k)]
    forget_items = spec.forget_eval[: args.max_items or None]
    neighbor_items = spec.neighbors[: args.max_items or None]

    def measure() -> tuple[torch.Tensor, torch.Tensor]:
        return (item_logprobs(model, tok, spec, "forget_eval", forget_items),
                item_logprobs(model, tok, spec, "neighbors", neighbor_items))

    t0 = time.perf_counter()
    base_f, base_n = measure()
    with zero_neurons(model, top):
        top_f, top_n = measure()
    gen = torch.Generator().manual_seed(cfg.seed)
    rand_f, rand_n = [], []
    for _ in range(args.draws):
        with zero_neurons(model, random_like(top, info.intermediate_size, gen)):
            f, n = measure()
        rand_f.append(float((f - base_f).mean()))
        rand_n.append(float((n - base_n).mean()))
    result = {
        "model": cfg.model, "k": args.k, "draws": args.draws,
        "layers_of_top_k": sorted({l for l, _ in top}),
        "forget_eval_n": len(forget_items), "neighbors_n": len(neighbor_items),
        "base_forget_logprob": float(base_f.mean()), "base_neighbor_logprob": float(base_n.mean()),
        "top_k_forget_delta": float((top_f - base_f).mean()),
        "top_k_neighbor_delta": float((top_n - base_n).mean()),
        "random_forget_delta": statistics.fmean(rand_f), "random_neighbor_delta": statistics.fmean(rand_n),
        "random_forget_deltas": rand_f,
    }
    result["top_vs_random_ratio"] = result["top_k_forget_delta"] / min(result["random_forget_delta"], -1e-9) \
        if result["random_forget_delta"] < 0 else float("inf")
    result["neighbor_vs_concept_ratio"] = abs(result["top_k_neighbor_delta"]) / max(abs(result["top_k_forget_delta"]), 1e-9)
    result["seconds"] = round(time.perf_counter() - t0, 1)

    if args.split_half:
        items = list(spec.forget_train)
        perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        halves = [[items[i] for i in perm[: len(items) // 2]], [items[i] for i in perm[len(items) // 2:]]]
        retain = neuron_stats(model, tok, spec, "retain_train", list(spec.retain_train))
        tops = []
        for half in halves:
            forget = neuron_stats(model, tok, spec, "forget_train", half)
            comb = combined_score({s: forget.mean(s) for s in SCORES}, {s: retain.mean(s) for s in SCORES})
            tops.append([(l, u) for l, u, _ in top_neurons(comb, args.k)])
        n_total = info.num_layers * info.intermediate_size
        result["split_half_jaccard"] = jaccard(*tops)
        result["split_half_chance"] = args.k / (2 * n_total - args.k)

    print(f"model {cfg.model}; top-{args.k} combined-score neurons in layers {result['layers_of_top_k']}")
    print(f"{'':28}{'forget_eval (concept)':>24}{'neighbors':>14}")
    print(f"{'base mean answer log-prob':28}{result['base_forget_logprob']:>24.3f}{result['base_neighbor_logprob']:>14.3f}")
    print(f"{'zero top-k: change':28}{result['top_k_forget_delta']:>24.3f}{result['top_k_neighbor_delta']:>14.3f}")
    print(f"{'zero random-k: change':28}{result['random_forget_delta']:>24.3f}{result['random_neighbor_delta']:>14.3f}"
          f"   (mean of {args.draws} draws, same layers)")
    print(f"top-k / random-k on the concept: {result['top_vs_random_ratio']:.1f}x (target >= 3x)")
    print(f"|neighbour change| / |concept change| under top-k: {result['neighbor_vs_concept_ratio']:.2f} (target <= 0.33)")
    if args.split_half:
        print(f"split-half Jaccard of the top-{args.k}: {result['split_half_jaccard']:.3f} "
              f"(chance {result['split_half_chance']:.4f})")
    print(f"({result['seconds']} s)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
