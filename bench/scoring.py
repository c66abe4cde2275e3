"""Speed of answer scoring (answer log-prob, first-token rank, the multiple-choice view) per prompt.

    python bench/scoring.py [--model M] [--set forget_eval] [--items 16]

For each prompt, its aliases and every candidate title are scored two ways, same numbers:
  padded   one padded batch of (prompt + continuation) sequences (`answer_logprobs`)
  packed   one forward: prompt then the trie of the continuations' tokens (`score_continuations`)
Prints seconds, tokens run through the model, the ratios, and the largest log-prob difference.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from agmask.concepts import load_concept
from agmask.errors import AgmaskError
from agmask.models import load
from agmask.scoring import QA_SETS, collate_answers, prefix_for
from agmask.scoring.continuation import _trie, score_continuations
from agmask.scoring.encode import closing_for, common_prefix_len, tokens
from agmask.scoring.logprobs import answer_logprobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--concept", default="inception")
    ap.add_argument("--set", default="forget_eval", choices=QA_SETS)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tok, _ = load(args.model)
        spec = load_concept(args.concept).spec
    except AgmaskError as e:
        sys.exit(f"error: {e}")
    items = spec.items(args.set)[: args.items]
    if not items:
        sys.exit(f"error: {args.concept} has no {args.set} prompts to score (or --items is 0)")
    jobs = []
    for it in items:
        prefix = prefix_for(tok, spec, args.set, it)
        close = closing_for(spec.lead_for(args.set, it))
        jobs.append((prefix, [t + close for t in dict.fromkeys(spec.answers_for(it) + list(spec.candidates))]))
    results, seconds, counted = {}, {}, {}
    with torch.no_grad():
        score_continuations(model, tok, *jobs[0])  # warm-up
        t0 = time.perf_counter()
        results["padded"] = [answer_logprobs(model, collate_answers(tok, [p] * len(c), c)).tolist() for p, c in jobs]
        seconds["padded"] = time.perf_counter() - t0
        counted["padded"] = sum(len(c) * max(len(tokens(tok, p + x)) for x in c) for p, c in jobs)
        t0 = time.perf_counter()
        results["packed"] = [[s.logprob for s in score_continuations(model, tok, p, c)] for p, c in jobs]
        seconds["packed"] = time.perf_counter() - t0
    packed_tokens = 0
    for p, c in jobs:
        prefix_ids = tokens(tok, p)
        joints = [tokens(tok, p + x) for x in c]
        shared = min(common_prefix_len(prefix_ids, j) for j in joints)
        packed_tokens += shared + len(_trie(joints, shared)[0])
    counted["packed"] = packed_tokens
    n_conts = sum(len(c) for _, c in jobs)
    print(f"{args.model}: {len(jobs)} {args.set} prompts, {n_conts} continuations")
    print(f"{'':8}{'seconds':>10}{'tokens run':>12}{'speed-up':>10}{'max |diff| vs padded':>22}")
    for name in ("padded", "packed"):
        diff = max(abs(a - b) for ra, rb in zip(results[name], results["padded"]) for a, b in zip(ra, rb))
        print(f"{name:8}{seconds[name]:>10.2f}{counted[name]:>12}{seconds['padded'] / seconds[name]:>9.2f}x{diff:>22.2e}")


if __name__ == "__main__":
    main()
