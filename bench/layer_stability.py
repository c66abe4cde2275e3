"""Does the mask's layer choice survive a change of prompts? Training sets only, no training.

    python bench/layer_stability.py --concept C [--concept C2 ...] [--cache DIR] [--subset 24] [--pairs 20]
                                    [--criterion NAME ...] [--model M] [--threads 1] [--stats-only]

Per concept, every forget_train and retain_train prompt is attributed once (per-sample saliency and Fisher at
the answer positions, the attribute stage's defaults; cached as DIR/<concept>.pt). Then each layer criterion
of `CRITERIA` chooses `--layers` layers from prompt subsets:

  pairs     `--pairs` draws of two disjoint random subsets of `--subset` forget and `--subset` retain prompts
            (as far as the sets allow): the mean Jaccard overlap of the two layer sets, how many pairs
            share no layer, and the mean overlap of the two masks (the K best units inside the layers);
  demo/A    the demo's subset (the first 24 of each set) against `agmask tune`'s half A (`tuning.measure.Halves`);
  full      each subset's overlap with the choice on every prompt.

Reads no evaluation set (a training view of the concept). Prints one table row per concept and criterion.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import torch

LAYERS = 4
LAMBDA = 0.5  # attribute.retain_weight's default


def _combined(forget, retain):
    from agmask.attribution.ranking import combined_score

    return combined_score({s: t.mean(0) for s, t in forget.items()}, {s: t.mean(0) for s, t in retain.items()}, LAMBDA)


def _per_layer(combined, top_k) -> torch.Tensor:
    """(L,) how many of the top_k combined neurons sit in each layer (the attribute stage's count)."""
    from agmask.attribution.ranking import layer_rankings

    return torch.tensor(layer_rankings(torch.zeros(combined.shape[0]), combined, top_k)["top_neurons_per_layer"])


def _order(per_layer: torch.Tensor) -> list[int]:
    return torch.argsort(-per_layer.double(), stable=True).tolist()


def _counts(top_k):
    """The mask stage's layer_criterion=top_neurons with attribute.top_k = top_k."""
    return lambda forget, retain: _order(_per_layer(_combined(forget, retain), top_k))


def _floored(top_k, min_depth):
    """The count criterion with `mask.min_depth`: layers below the floor come last."""
    from agmask.stages.mask import Config, min_layer

    def order(forget, retain):
        ranking = _order(_per_layer(_combined(forget, retain), top_k))
        floor = min_layer(Config(min_depth=min_depth), len(ranking))
        return [l for l in ranking if l >= floor] + [l for l in ranking if l < floor]
    return order


def _top_mass(per_layer):
    return lambda forget, retain: _order(torch.topk(_combined(forget, retain), per_layer, dim=1).values.sum(1))


def _window(top_k, width=LAYERS):
    """Layers of the contiguous window of `width` layers holding most top-k neurons, first; the rest after."""
    def order(forget, retain):
        counts = _per_layer(_combined(forget, retain), top_k).double()
        wide = min(width, len(counts))
        start = int(torch.argmax(counts.unfold(0, wide, 1).sum(1)))
        inside = list(range(start, start + wide))
        return inside + [l for l in range(len(counts)) if l not in inside]
    return order


def _all_layers(forget, retain):
    return list(range(next(iter(forget.values())).shape[1]))


_all_layers.keeps_all = True


CRITERIA = {"top100 (today)": _counts(100), "top256": _counts(256), "top1000": _counts(1000),
            "top-64 mass": _top_mass(64),
            "window4 top256": _window(256), "all layers": _all_layers,
            "window4 top1000": _window(1000), "top100, min_depth 0.5": _floored(100, 0.5)}
K = 256  # mask.k's default


def per_sample_stats(model, tokenizer, spec, set_name: str, batch: int) -> dict[str, torch.Tensor]:
    from agmask.attribution import neuron_stats
    from agmask.attribution.registry import SCORES

    items = list(getattr(spec, set_name))
    stats = neuron_stats(model, tokenizer, spec, set_name, items, batch, keep_per_sample=True)
    return {score: torch.cat(stats.per_sample[score]) for score in SCORES}  # (N, L, I)


def cached_stats(concept: str, cache: Path, model_spec: str, batch: int, state: dict) -> dict:
    from agmask.concepts import load_concept
    from agmask.concepts.training_view import training_view
    from agmask.models import load

    path = cache / f"{Path(concept).stem}.pt"
    if path.is_file():
        return torch.load(path)
    if "model" not in state:
        state["model"] = load(model_spec)
    model, tokenizer, _ = state["model"]
    spec = training_view(load_concept(concept).spec)
    out = {name: per_sample_stats(model, tokenizer, spec, name, batch) for name in ("forget_train", "retain_train")}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(out, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return out


def jaccard(a, b) -> float:
    return len(set(a) & set(b)) / len(set(a) | set(b))


def chosen(criterion, stats: dict, forget_idx: list[int], retain_idx: list[int], layers: int):
    """(the chosen layers, the mask's (layer, unit) set: the top K combined neurons inside them)."""
    from agmask.attribution.ranking import top_neurons

    forget = {s: t[forget_idx] for s, t in stats["forget_train"].items()}
    retain = {s: t[retain_idx] for s, t in stats["retain_train"].items()}
    picked = sorted(criterion(forget, retain)[: None if getattr(criterion, "keeps_all", False) else layers])
    return picked, {(l, u) for l, u, _ in top_neurons(_combined(forget, retain), K, picked)}


def report(concept: str, stats: dict, subset: int, pairs: int, layers: int, seed: int,
           only: list[str] | None = None) -> None:
    from agmask.concepts import load_concept
    from agmask.concepts.training_view import training_view
    from agmask.tuning.measure import Halves

    spec = training_view(load_concept(concept).spec)
    halves = Halves.of(spec)
    n_f, n_r = (len(next(iter(stats[s].values()))) for s in ("forget_train", "retain_train"))
    n_layers = next(iter(stats["forget_train"].values())).shape[1]
    rng = random.Random(seed)
    draws = []
    for _ in range(pairs):
        f, r = rng.sample(range(n_f), n_f), rng.sample(range(n_r), n_r)
        fs, rs = min(subset, n_f // 2), min(subset, n_r // 2)
        draws.append(((f[:fs], r[:rs]), (f[fs : 2 * fs], r[rs : 2 * rs])))
    demo = (list(range(min(24, n_f))), list(range(min(24, n_r))))
    half_a = tuple([i for i, it in enumerate(getattr(spec, name)) if id(it) in {id(x) for x in part}]
                   for name, part in (("forget_train", halves.forget_a), ("retain_train", halves.retain_a)))
    every = (list(range(n_f)), list(range(n_r)))
    for name, criterion in CRITERIA.items():
        if only and name not in only:
            continue
        full, _ = chosen(criterion, stats, *every, layers)
        overlaps, units, disjoint, to_full = [], [], 0, []
        for one, two in draws:
            (a, ua), (b, ub) = chosen(criterion, stats, *one, layers), chosen(criterion, stats, *two, layers)
            overlaps.append(jaccard(a, b))
            units.append(jaccard(ua, ub))
            disjoint += not set(a) & set(b)
            to_full += [jaccard(a, full), jaccard(b, full)]
        (d, ud), (h, uh) = chosen(criterion, stats, *demo, layers), chosen(criterion, stats, *half_a, layers)
        d, h, full = (("all" if len(x) == n_layers else x) for x in (d, h, full))
        print(f"{Path(concept).stem:26s} {name:18s} pairs J {statistics.mean(overlaps):.2f} "
              f"(disjoint {disjoint}/{pairs}) units J {statistics.mean(units):.2f}  to-full J "
              f"{statistics.mean(to_full):.2f}  demo {d} vs A {h} J {jaccard(d, h):.2f} units J {jaccard(ud, uh):.2f}"
              f"  full {full}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", action="append", required=True)
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--cache", type=Path, default=Path("runs/layer-stability"))
    ap.add_argument("--subset", type=int, default=24)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--criterion", action="append", default=[], help="only these criteria (default: every one)")
    ap.add_argument("--stats-only", action="store_true", help="attribute and cache, print nothing")
    args = ap.parse_args()
    from agmask.errors import AgmaskError

    if args.threads:
        torch.set_num_threads(args.threads)
    state: dict = {}
    try:
        for concept in args.concept:
            stats = cached_stats(concept, args.cache, args.model, args.batch, state)
            if not args.stats_only:
                report(concept, stats, args.subset, args.pairs, args.layers, args.seed, args.criterion)
    except AgmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
