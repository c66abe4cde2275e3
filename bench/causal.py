"""Cost of causal selection as a multiple of one attribution pass (target <= 5x).

    python bench/causal.py --model tiny:llama [--concept inception] [--positions answer]
                           [--k 256] [--num-layers 4] [--candidates 128] [--group-size 16]
                           [--causal-items 16] [--causal-positions prompt] [--sweep-positions subject]
                           [--device cpu]

attribution  what the attribute stage computes: `neuron_stats` on forget_train and retain_train
             (forward + backward, every layer's saliency and Fisher), batch 8
causal       `causal_selection` (what `mask.selection=causal` runs) on that attribution's combined
             score: retain means, clean forward, layer sweep, candidate groups, whole-mask check
Prints both times, their ratio, the causal phases, and what the selection measured (training sets only).
The logic lives in agmask.attribution / agmask.masking; this script only times it.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny:llama")
    ap.add_argument("--concept", default="inception")
    ap.add_argument("--positions", default="answer", help="attribute.positions")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--num-layers", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=128)
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--causal-items", type=int, default=16)
    ap.add_argument("--causal-positions", default="prompt")
    ap.add_argument("--sweep-positions", default="subject")
    ap.add_argument("--batch", type=int, default=16, help="rows per ablated forward")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()

    from agmask.attribution import SCORES, combined_score, neuron_stats
    from agmask.concepts import load_concept
    from agmask.masking.causal import CausalOptions, causal_selection
    from agmask.models import load

    spec = load_concept(args.concept).spec
    model, tok, info = load(args.model, device=args.device, dtype=args.dtype)
    t0 = time.perf_counter()
    forget = neuron_stats(model, tok, spec, "forget_train", spec.forget_train, positions=args.positions)
    retain = neuron_stats(model, tok, spec, "retain_train", spec.retain_train, positions=args.positions)
    t_attr = time.perf_counter() - t0
    score = combined_score({s: forget.mean(s) for s in SCORES}, {s: retain.mean(s) for s in SCORES})

    opts = CausalOptions(k=args.k, num_layers=args.num_layers, candidates=args.candidates, group_size=args.group_size,
                         items=args.causal_items, positions=args.causal_positions, sweep_positions=args.sweep_positions,
                         batch_size=args.batch)
    t0 = time.perf_counter()
    chosen = causal_selection(model, tok, spec, score, opts)
    t_causal = time.perf_counter() - t0

    rec = chosen.record
    print(f"{args.model} ({info.num_parameters / 1e6:.0f}M, {info.num_layers} layers x {info.intermediate_size} "
          f"neurons, {args.device}, {torch.get_num_threads()} threads), concept {args.concept}")
    print(f"attribution pass ({len(spec.forget_train)} forget_train + {len(spec.retain_train)} retain_train, "
          f"positions {args.positions}): {t_attr:.2f} s")
    print(f"causal selection ({rec['items']['forget_train']} forget + {rec['items']['neighbours']} neighbour prompts, "
          f"{len(chosen.groups)} groups of <= {args.group_size}, {args.candidates} candidates/layer): {t_causal:.2f} s")
    print(f"causal / attribution: {t_causal / t_attr:.2f}x (target <= 5x)")
    print("phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in chosen.seconds.items()))
    if rec["layer_sweep"]:
        best = sorted(rec["layer_sweep"], key=lambda r: r["ratio"], reverse=True)[:6]
        print("layer sweep, best ratios (layer: concept / neighbour effect, nats): "
              + ", ".join(f"{r['layer']}: {r['concept_effect']:.3f}/{r['neighbour_effect']:.3f}" for r in best))
    layers = sorted(torch.nonzero(chosen.mask.any(1)).flatten().tolist())
    m, r = rec["mask_effect"], rec["random_effect"]
    print(f"mask: {int(chosen.mask.sum())} units in layers {layers}; mean-ablated on the training prompts: concept "
          f"{m['concept_effect']:.3f}, neighbours {m['neighbour_effect']:.3f} nats; same-size random mask in the same "
          f"layers: concept {r['concept_effect']:.3f}, neighbours {r['neighbour_effect']:.3f}")


if __name__ == "__main__":
    main()
