"""First load vs cached load of an embedded model.

    python bench/load.py [--model embedded:qwen2.5-coder-0.5b-instruct]

The first load joins the package files, checks the sha256, converts the GGUF tokenizer and
dequantises the weights, then caches model and tokenizer under a fresh temporary AGMASK_HOME;
the cached loads read that cache. Prints both times and their ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--repeats", type=int, default=3, help="cached loads to time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["AGMASK_HOME"] = home
        from agmask.models import load

        t0 = time.perf_counter()
        model, _, info = load(args.model)
        first = time.perf_counter() - t0
        del model
        cached = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model, _, _ = load(args.model)
            cached.append(time.perf_counter() - t0)
            del model
    best = min(cached)
    print(f"model {args.model} ({info.num_parameters / 1e6:.0f}M parameters, {info.dtype})")
    print(f"first load (join + sha256 + tokenizer conversion + dequantise + cache): {first:7.1f} s")
    print(f"cached load (best of {args.repeats}; median {statistics.median(cached):.1f} s):            {best:7.1f} s")
    print(f"ratio: {first / best:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
