"""Where is an answer ranked: at its first token, or after an initial? A diagnostic, base vs adapter.

    python bench/initial_ranks.py --concept FILE --adapter RUN/adapters/NAME [--set forget_eval] [--items 8]

For each of the first `--items` prompts of the set, the best alias's rank (the min over aliases) read at the
answer's first token (rank_at 0) and at its first distinguishing token (`agmask.scoring.distinct`, which skips
an initial such as `E` of `E|instein`), under the base model and with the adapter. Prints the medians and the
per-prompt pairs. Reads the evaluation set it is given: its figures are diagnostics, not held-out results.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from agmask.concepts import load_concept
from agmask.concepts.schema import SET_NAMES
from agmask.errors import AgmaskError
from agmask.models import DEFAULT_MODEL, load
from agmask.scoring import prefix_for
from agmask.scoring.continuation import score_continuations
from agmask.scoring.distinct import distinguishing_offset, others_than
from agmask.scoring.encode import closing_for


def best_ranks(model, tokenizer, spec, set_name: str, items: list) -> list[tuple[int, int]]:
    """Per item: (rank at the first token, rank at the first distinguishing token), each the min over aliases."""
    out = []
    for item in items:
        lead = spec.lead_for(set_name, item)
        close = closing_for(lead)
        aliases = spec.answers_for(item)
        at = [distinguishing_offset(tokenizer, lead, a, others_than(spec, a), close) for a in aliases]
        prefix, texts = prefix_for(tokenizer, spec, set_name, item), [a + close for a in aliases]
        first = score_continuations(model, tokenizer, prefix, texts, rank_at=[0] * len(aliases))
        distinct = score_continuations(model, tokenizer, prefix, texts, rank_at=at)
        out.append((min(s.first_rank for s in first), min(s.first_rank for s in distinct)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", required=True)
    ap.add_argument("--adapter", required=True, help="a saved adapter directory (RUN/adapters/NAME)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--set", default="forget_eval", choices=SET_NAMES)
    ap.add_argument("--items", type=int, default=8)
    args = ap.parse_args()
    if not (Path(args.adapter) / "adapter_config.json").is_file():
        print(f"error: --adapter {args.adapter} is not a saved adapter (no adapter_config.json there): pass "
              "RUN/adapters/NAME of a finished unlearn stage", file=sys.stderr)
        return 2
    try:
        from peft import PeftModel

        spec = load_concept(args.concept).spec
        items = list(getattr(spec, args.set))[: args.items]
        model, tokenizer, _ = load(args.model)
        with torch.no_grad():
            base = best_ranks(model, tokenizer, spec, args.set, items)
            adapted = best_ranks(PeftModel.from_pretrained(model, args.adapter).eval(), tokenizer, spec, args.set,
                                 items)
    except AgmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, i in (("first token", 0), ("first distinguishing token", 1)):
        print(f"{name}: median rank {statistics.median(b[i] for b in base)} -> "
              f"{statistics.median(a[i] for a in adapted)}; per prompt (base, adapted) "
              f"{[(b[i], a[i]) for b, a in zip(base, adapted)]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
