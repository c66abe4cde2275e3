"""A data-parallel job for test_distributed.py, started by `accelerate launch --multi_gpu --num_processes N`.

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 tests/integration/distributed_job.py JOB.json

JOB.json: {"run_dir", "model", "concept", "stages", "overrides", "out"}. Every process joins the process
group (gloo on CPU), writes `out/rank<r>.json` with the world size it sees, then runs the stages through
the real driver, exactly as `agmask run` would.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from agmask import distributed
from agmask.config import RunConfig
from agmask.pipeline import run_pipeline


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    torch.set_num_threads(1)
    distributed.init("cpu")
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps({
        "rank": distributed.rank(), "world_size": distributed.world_size(),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None}))
    cfg = RunConfig(model=job["model"], concepts=[job["concept"]], run_dir=Path(job["run_dir"]),
                    overrides=job["overrides"])
    run_pipeline(cfg, stages=job["stages"])


if __name__ == "__main__":
    main(sys.argv[1])
