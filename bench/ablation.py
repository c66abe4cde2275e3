"""Causal check of the attribution: zero the top-k combined-score neurons vs k random ones.

    python bench/ablation.py --run-dir runs/demo [--k 100] [--draws 5] [--split-half]
                             [--retain-weight L | --select-retain-weight 0.5,1,2,3] [--mean] [--use-mask]

Reads `attribute/scores.safetensors` of a finished run; prints the mean change of the concept's
answer log-prob on forget_eval and of the neighbours' on neighbors, their ratios, and (with
--split-half) the Jaccard overlap of the top-k found on two halves of forget_train (chance ~ k/N).

The combined score is the run's own (`attribute.retain_weight`), or rebuilt from the stored forget
and retain scores with --retain-weight. --select-retain-weight chooses that lambda on the TRAINING
sets only: attribution on half A of forget_train and retain_train, the same ablation measured on
half B (forget_train for the concept, retain_train for the neighbours); the chosen lambda is the one
with the lowest neighbour/concept ratio among those whose top-k beats random >= 3x (else the one
that beats random most). Only then are the evaluation sets measured, once, with that lambda.

--mean replaces the neurons by their mean over retain_train (every position) instead of zero (the
issue's measure); --use-mask ablates the run's `mask/mask.safetensors` mask (e.g. a causal selection)
instead of the top-k of the combined score, against random draws of the same size in the same layers.
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
from agmask.attribution.ablation import jaccard, mean_neurons, random_like, zero_neurons
from agmask.attribution.effects import activation_means, encode_prompts
from agmask.concepts import training_halves
from agmask.concepts.training_view import training_view
from agmask.config import RunConfig
from agmask.files import load_tensors, read_json
from agmask.scoring import item_logprobs
from agmask.session import Session


def ablation(model, tok, spec, top, concept_set, neighbour_set, draws: int, seed: int, intermediate: int,
             base: tuple[torch.Tensor, torch.Tensor] | None = None, ablate=None) -> dict:
    """Zero (or `ablate(model, neurons)`) `top` and `draws` random same-layer sets; mean change of the
    concept's and the neighbours' answer log-probs. concept_set, neighbour_set: (set name, items)."""
    ablate = ablate or zero_neurons
    def measure() -> tuple[torch.Tensor, torch.Tensor]:
        return (item_logprobs(model, tok, spec, *concept_set), item_logprobs(model, tok, spec, *neighbour_set))

    base_f, base_n = base or measure()
    with ablate(model, top):
        top_f, top_n = measure()
    gen = torch.Generator().manual_seed(seed)
    rand_f, rand_n = [], []
    for _ in range(draws):
        with ablate(model, random_like(top, intermediate, gen)):
            f, n = measure()
        rand_f.append(float((f - base_f).mean()))
        rand_n.append(float((n - base_n).mean()))
    r = {
        "layers_of_top_k": sorted({l for l, _ in top}),
        "base_forget_logprob": float(base_f.mean()), "base_neighbor_logprob": float(base_n.mean()),
        "top_k_forget_delta": float((top_f - base_f).mean()),
        "top_k_neighbor_delta": float((top_n - base_n).mean()),
        "random_forget_delta": statistics.fmean(rand_f), "random_neighbor_delta": statistics.fmean(rand_n),
        "random_forget_deltas": rand_f,
    }
    if r["random_forget_delta"] < 0:
        r["top_vs_random_ratio"] = r["top_k_forget_delta"] / r["random_forget_delta"]
    else:  # random neurons did not lower the concept at all: top-k wins only if it lowered it
        r["top_vs_random_ratio"] = float("inf") if r["top_k_forget_delta"] < 0 else 0.0
    r["neighbor_vs_concept_ratio"] = abs(r["top_k_neighbor_delta"]) / max(abs(r["top_k_forget_delta"]), 1e-9)
    return r


def select_retain_weight(model, tok, spec, grid: list[float], k: int, draws: int, seed: int, intermediate: int,
                         ablate=None) -> tuple[float, list[dict]]:
    """Choose lambda on the training sets only (see the module docstring); returns it and one row per lambda.

    `spec` is read through `training_view`: an evaluation set touched while choosing is an error."""
    spec = training_view(spec)
    forget_a, forget_b = training_halves(spec.forget_train)
    retain_a, retain_b = training_halves(spec.retain_train)
    fs = neuron_stats(model, tok, spec, "forget_train", forget_a)
    rs = neuron_stats(model, tok, spec, "retain_train", retain_a)
    sets = (("forget_train", forget_b), ("retain_train", retain_b))
    base = (item_logprobs(model, tok, spec, *sets[0]), item_logprobs(model, tok, spec, *sets[1]))
    rows = []
    for lam in grid:
        comb = combined_score({s: fs.mean(s) for s in SCORES}, {s: rs.mean(s) for s in SCORES}, lam)
        top = [(l, u) for l, u, _ in top_neurons(comb, k)]
        r = ablation(model, tok, spec, top, *sets, draws, seed, intermediate, base=base, ablate=ablate)
        rows.append({"retain_weight": lam, **r})
        print(f"  lambda {lam:<5} concept {r['top_k_forget_delta']:8.3f}  neighbours {r['top_k_neighbor_delta']:8.3f}  "
              f"random {r['random_forget_delta']:8.3f}  top/random {r['top_vs_random_ratio']:5.1f}x  "
              f"neighbour/concept {r['neighbor_vs_concept_ratio']:.2f}", flush=True)
    beating = [r for r in rows if r["top_vs_random_ratio"] >= 3]
    best = min(beating, key=lambda r: r["neighbor_vs_concept_ratio"]) if beating \
        else max(rows, key=lambda r: r["top_vs_random_ratio"])
    return best["retain_weight"], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--split-half", action="store_true")
    ap.add_argument("--max-items", type=int, default=0, help="per evaluation set; 0 = all")
    ap.add_argument("--retain-weight", type=float, default=None,
                    help="lambda of the combined score (default: the run's attribute.retain_weight)")
    ap.add_argument("--select-retain-weight", default=None, metavar="L1,L2,...",
                    help="choose lambda among these on the training halves, then measure the evaluation sets with it")
    ap.add_argument("--select-draws", type=int, default=3, help="random draws per lambda in the selection")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    ap.add_argument("--mean", action="store_true", help="mean-ablate (mean over retain_train) instead of zeroing")
    ap.add_argument("--use-mask", action="store_true", help="ablate the run's mask/mask.safetensors mask, not the top-k")
    args = ap.parse_args()
    try:
        grid = [float(x) for x in args.select_retain_weight.split(",")] if args.select_retain_weight else None
    except ValueError:
        sys.exit(f"error: --select-retain-weight takes comma-separated numbers, got {args.select_retain_weight!r}")
    if not (args.run_dir / "attribute" / "scores.safetensors").is_file():
        sys.exit(f"error: {args.run_dir}/attribute/scores.safetensors not found: run `agmask attribute --run-dir "
                 f"{args.run_dir}` first")

    manifest = read_json(args.run_dir / "manifest.json")
    cfg = RunConfig(model=manifest["model"]["spec"], concepts=[manifest["concept"]["source"].removeprefix("shipped:")],
                    run_dir=args.run_dir, seed=manifest["seed"], device=manifest["device"], dtype=manifest["dtype"])
    session = Session.create(cfg)
    model, tok, info = session.model()
    spec = session.spec
    scores = load_tensors(args.run_dir / "attribute" / "scores.safetensors")
    t0 = time.perf_counter()
    result = {"model": cfg.model, "k": args.k, "draws": args.draws, "ablation": "mean" if args.mean else "zero"}
    ablate = zero_neurons
    if args.mean:
        means = activation_means(model, tok, encode_prompts(tok, spec, "retain_train", list(spec.retain_train)))["all"]

        def ablate(m, neurons):
            return mean_neurons(m, neurons, means)
    lam = args.retain_weight
    if grid:
        print(f"choosing lambda on the training halves among {grid} ({args.select_draws} random draws each):", flush=True)
        lam, result["selection"] = select_retain_weight(model, tok, spec, grid, args.k, args.select_draws, cfg.seed,
                                                        info.intermediate_size, ablate)
        print(f"chosen lambda: {lam}", flush=True)
    if lam is None:
        combined = scores["combined"]
    else:
        combined = combined_score({s: scores[f"forget.{s}"] for s in SCORES}, {s: scores[f"retain.{s}"] for s in SCORES}, lam)
    result["retain_weight"] = lam if lam is not None else "the run's attribute.retain_weight"
    top = [(l, u) for l, u, _ in top_neurons(combined, args.k)]
    if args.use_mask:
        mask_file = args.run_dir / "mask" / "mask.safetensors"
        if not mask_file.is_file():
            sys.exit(f"error: {mask_file} not found: run `agmask mask --run-dir {args.run_dir}` first")
        top = [(int(l), int(u)) for l, u in torch.nonzero(load_tensors(mask_file)["mask"])]
        result.update(k=len(top), neurons="the run's mask")
    forget_items = spec.forget_eval[: args.max_items or None]
    neighbor_items = spec.neighbors[: args.max_items or None]
    result.update(forget_eval_n=len(forget_items), neighbors_n=len(neighbor_items))
    result.update(ablation(model, tok, spec, top, ("forget_eval", forget_items), ("neighbors", neighbor_items),
                           args.draws, cfg.seed, info.intermediate_size, ablate=ablate))
    result["seconds"] = round(time.perf_counter() - t0, 1)

    if args.split_half:
        items = list(spec.forget_train)
        perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        split = [[items[i] for i in perm[: len(items) // 2]], [items[i] for i in perm[len(items) // 2:]]]
        retain = neuron_stats(model, tok, spec, "retain_train", list(spec.retain_train))
        tops = []
        for half in split:
            forget = neuron_stats(model, tok, spec, "forget_train", half)
            comb = combined_score({s: forget.mean(s) for s in SCORES}, {s: retain.mean(s) for s in SCORES},
                                  1.0 if lam is None else lam)
            tops.append([(l, u) for l, u, _ in top_neurons(comb, args.k)])
        n_total = info.num_layers * info.intermediate_size
        result["split_half_jaccard"] = jaccard(*tops)
        result["split_half_chance"] = args.k / (2 * n_total - args.k)

    what = f"the run's mask ({len(top)} neurons)" if args.use_mask else f"top-{args.k} combined-score neurons"
    print(f"model {cfg.model}; lambda {result['retain_weight']}; {result['ablation']}-ablation of {what} in layers "
          f"{result['layers_of_top_k']}")
    print(f"{'':28}{'forget_eval (concept)':>24}{'neighbors':>14}")
    print(f"{'base mean answer log-prob':28}{result['base_forget_logprob']:>24.3f}{result['base_neighbor_logprob']:>14.3f}")
    print(f"{'ablate top-k: change':28}{result['top_k_forget_delta']:>24.3f}{result['top_k_neighbor_delta']:>14.3f}")
    print(f"{'ablate random-k: change':28}{result['random_forget_delta']:>24.3f}{result['random_neighbor_delta']:>14.3f}"
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
