"""Do two run directories hold the same results? Every JSON / JSONL artefact compared value by value.

    python bench/same_numbers.py RUN_A RUN_B [--tol 1e-4] [--files eval/metrics.json,eval/generations.jsonl]

Numbers may differ by at most `--tol` (absolute, or relative to the larger magnitude when that is above 1);
strings, booleans, nulls and the shape of every list and object must be equal. Timings (`seconds`, and the
DONE markers) and the run's own paths are not results and are skipped. Prints each difference and a
summary line; the exit status is 1 when anything differs. For speed work: the same pipeline on a tiny
model before and after a change must give the same numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

SKIP_KEYS = {"seconds", "input_hash", "wall_s", "cpu_s", "command", "commit", "started", "finished", "run_dir", "source"}
DEFAULT_FILES = ("baseline/answers.jsonl", "baseline/summary.json", "perturb/outputs.jsonl", "perturb/stability.json",
                 "perturb/recommend_outputs.jsonl", "similarity/similarity.json", "attribute/layers.json",
                 "mask/mask.json", "unlearn/log.jsonl", "unlearn/summary.json", "eval/metrics.json",
                 "eval/generations.jsonl", "eval/recommendations.jsonl")


def differences(a, b, tol: float, path: str = "") -> list[str]:
    """Where `a` and `b` differ (one line each), numbers within `tol`."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return [] if type(a) is type(b) and a == b else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) and math.isnan(b):
            return []
        if a == b or abs(a - b) <= tol * max(1.0, abs(a), abs(b)):
            return []
        return [f"{path}: {a!r} != {b!r} (|diff| {abs(a - b):.3g})"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in {'A' if k in a else 'B'}" for k in sorted(set(a) ^ set(b)) if k not in SKIP_KEYS]
        for k in a:
            if k in b and k not in SKIP_KEYS:
                out += differences(a[k], b[k], tol, f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, tol, f"{path}[{i}]")]
    return [f"{path}: {type(a).__name__} != {type(b).__name__}"]


def load(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--files", default=",".join(DEFAULT_FILES), help="comma-separated paths inside the run dirs")
    args = ap.parse_args()
    total, compared = 0, 0
    for name in [f for f in args.files.split(",") if f]:
        a, b = args.run_a / name, args.run_b / name
        if not a.is_file() and not b.is_file():
            continue
        if not (a.is_file() and b.is_file()):
            print(f"{name}: only in {'A' if a.is_file() else 'B'}")
            total += 1
            continue
        diffs = differences(load(a), load(b), args.tol, name)
        compared += 1
        total += len(diffs)
        for d in diffs[:50]:
            print(d)
        if len(diffs) > 50:
            print(f"{name}: ... {len(diffs) - 50} more")
        print(f"{name}: {'same' if not diffs else f'{len(diffs)} differences'}", file=sys.stderr)
    print(f"{compared} files compared, {total} differences (tolerance {args.tol:g})")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
