"""Everything checked before a run writes anything (the manifest included): options, device, run directory,
concept files and model. Each problem is one line naming what is wrong and how to fix it."""
from __future__ import annotations

import os
from pathlib import Path

from agmask.concepts import LoadedConcept, load_concept
from agmask.config import RunConfig, validate_options
from agmask.errors import AgmaskError


def check_device(device: str) -> None:
    """The device exists here: `cuda`, `cuda:N` and `auto` need a visible CUDA GPU (N below their count)."""
    if device == "cpu":
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise AgmaskError(f"--device {device}: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                          "use --device cpu")
    index = device.partition(":")[2]
    if index and int(index) >= count:
        raise AgmaskError(f"--device {device}: only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})")


def check_run_dir(run_dir: Path) -> None:
    """The run directory is a directory (or can become one) that this process can write."""
    run_dir = Path(run_dir)
    for path in (run_dir, *run_dir.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            raise AgmaskError(f"--run-dir {run_dir}: {path} is a file, not a directory; choose another --run-dir")
        if not os.access(path, os.W_OK | os.X_OK):
            raise AgmaskError(f"--run-dir {run_dir}: {path} is not writable (permission denied); fix its "
                              "permissions or choose another --run-dir")
        return


def preflight(cfg: RunConfig, stage_modules: dict) -> list[LoadedConcept]:
    """Validate a run before any work; returns the loaded concepts."""
    from agmask.models.check import check_model, model_num_layers

    resolved = validate_options(cfg, stage_modules)
    check_device(cfg.device)
    check_run_dir(cfg.run_dir)
    concepts = [load_concept(c) for c in cfg.concepts]
    check_model(cfg.model)
    mask_conf = resolved.get("mask")
    layers = getattr(mask_conf, "layers", None)
    floored = bool(getattr(mask_conf, "min_depth", 0)) and not layers
    count = model_num_layers(cfg.model) if layers or floored else None
    if count is not None and layers and any(layer >= count for layer in layers):
        raise AgmaskError(f"bad option for stage mask: layers {sorted(l for l in layers if l >= count)} do not "
                          f"exist, {cfg.model} has layers 0..{count - 1}")
    if count is not None and floored:
        from agmask.stages.mask import min_layer

        if min_layer(mask_conf, count) >= count:
            raise AgmaskError(f"bad option for stage mask: min_depth {mask_conf.min_depth:g} leaves no layer of "
                              f"{cfg.model} (layers 0..{count - 1}): lower mask.min_depth")
    return concepts
