"""What the pipeline bench scripts share: the options that choose a run, and the session that runs it.

`add_run_options(ap, default_model)` adds --model, --concept, --budget, --device, --dtype, --run-dir, --stages,
--set, --force and --threads; `open_session(args, prefix)` applies --threads and returns the session, the
stages to run and the temporary directory holding the run (None with --run-dir; clean it up when done).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def add_run_options(ap: argparse.ArgumentParser, default_model: str, default_threads: int = 0) -> None:
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--concept", default="inception")
    ap.add_argument("--budget", default="demo", choices=["demo", "full"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--run-dir", type=Path, default=None, help="default: a fresh temporary directory")
    ap.add_argument("--stages", default="", help="comma-separated stages (default: every default stage)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE.OPTION=VALUE")
    ap.add_argument("--force", action="store_true", help="rerun stages already finished in --run-dir")
    ap.add_argument("--threads", type=int, default=default_threads, help="torch CPU threads (0: torch's choice); "
                    "on a machine shared with another job, 1 avoids oversubscription")


def open_session(args: argparse.Namespace, prefix: str):
    """(session, stage names, temporary directory or None) for the run the options describe."""
    import torch

    from agmask.cli.options import _parse_set
    from agmask.config import RunConfig
    from agmask.pipeline import STAGES
    from agmask.session import Session

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp, run_dir = None, args.run_dir
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        run_dir = Path(tmp.name) / "run"
    cfg = RunConfig(model=args.model, concepts=[args.concept], run_dir=run_dir, device=args.device,
                    dtype=args.dtype, budget=args.budget, force=args.force, overrides=_parse_set(tuple(args.sets)))
    stages = [s for s in args.stages.split(",") if s] or list(STAGES)
    return Session.create(cfg), stages, tmp
