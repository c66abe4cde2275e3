"""Wall time, CPU time and peak memory of every stage of `agmask run`, as a table.

    python bench/pipeline.py [--model embedded:smollm2-135m-instruct] [--budget demo] [--device cpu]
                             [--run-dir DIR] [--stages baseline,perturb,...] [--set STAGE.OPTION=VALUE]
                             [--json out.json]

Runs the pipeline in this process, stage by stage, through the real driver (`pipeline.run_stage`,
so DONE markers, hashes and resume are exactly those of `agmask run`), in a fresh temporary run
directory unless --run-dir is given (then finished stages are skipped: pass --force to time them).
The model is loaded first, on its own row. A background thread samples VmRSS from
/proc/self/status every 20 ms; per stage the table shows the peak RSS seen while it ran, and the
total row the process's own high-water mark (VmHWM). On CUDA it also shows
torch.cuda.max_memory_allocated per stage. Prints figures only: nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from benchkit import add_run_options, open_session


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Peak resident set size (bytes) seen by a background thread between `reset()` and `peak`."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _status_kb("VmRSS") * 1024)
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self._peak = _status_kb("VmRSS") * 1024

    @property
    def peak(self) -> int:
        return max(self._peak, _status_kb("VmRSS") * 1024)


def _cuda_peak(device: str) -> float | None:
    import torch

    if not (device.startswith("cuda") or device == "auto") or not torch.cuda.is_available():
        return None
    return sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**30


def _cuda_reset(device: str) -> None:
    import torch

    if (device.startswith("cuda") or device == "auto") and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)
            torch.cuda.reset_peak_memory_stats(i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(ap, "embedded:smollm2-135m-instruct")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args()

    import torch

    from agmask.pipeline import run_stage, write_manifest

    session, stages, tmp = open_session(args, "agmask-bench-")
    rows = []
    with RssSampler() as rss:
        def timed(name: str, fn) -> None:
            rss.reset()
            _cuda_reset(args.device)
            wall, cpu = time.perf_counter(), time.process_time()
            ran = fn()
            rows.append({"stage": name, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                         "peak_rss_gb": rss.peak / 2**30, "cuda_peak_gb": _cuda_peak(args.device),
                         "ran": ran is not False})
            print(f"  {name:<11} {rows[-1]['wall_s']:7.1f} s", file=sys.stderr, flush=True)

        print(f"bench: {args.model}, --budget {args.budget}, {args.device}, torch threads "
              f"{torch.get_num_threads()}, run dir {session.run_dir}", file=sys.stderr, flush=True)
        timed("load", lambda: (write_manifest(session), session.model()))
        for name in stages:
            timed(name, lambda n=name: run_stage(session, n))
    hwm = _status_kb("VmHWM") * 1024 / 2**30

    info = session.model()[2]
    cuda = any(r["cuda_peak_gb"] is not None for r in rows)
    header = f"{'stage':<11} {'wall s':>8} {'CPU s':>8} {'peak RSS GB':>12}" + (f" {'CUDA peak GB':>13}" if cuda else "")
    print(f"\n{args.model} ({info.num_parameters / 1e6:.0f}M parameters, {info.dtype}), --budget {args.budget}, "
          f"{args.device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    print(header)
    print("-" * len(header))
    for r in rows:
        line = f"{r['stage']:<11} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['peak_rss_gb']:12.2f}"
        if cuda:
            line += f" {r['cuda_peak_gb']:13.2f}"
        print(line + ("" if r["ran"] else "  (up to date, skipped)"))
    print("-" * len(header))
    total = {"wall_s": sum(r["wall_s"] for r in rows), "cpu_s": sum(r["cpu_s"] for r in rows), "peak_rss_gb": hwm,
             "cuda_peak_gb": max((r["cuda_peak_gb"] or 0) for r in rows) if cuda else None}
    line = f"{'total':<11} {total['wall_s']:8.1f} {total['cpu_s']:8.1f} {hwm:12.2f}"
    print(line + (f" {total['cuda_peak_gb']:13.2f}" if cuda else "") + "  (RSS: process high-water mark)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "budget": args.budget, "device": args.device,
                                         "threads": torch.get_num_threads(), "stages": rows, "total": total}, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
