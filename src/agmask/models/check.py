"""Cheap checks that a model spec can be loaded, run before anything is written (no weights loaded)."""
from __future__ import annotations

import json
from pathlib import Path

from agmask.errors import ModelError

PATH_PREFIXES = ("/", "./", "../", "~")
GGUF_MAGIC = b"GGUF"


def looks_like_path(spec: str) -> bool:
    return spec.startswith(PATH_PREFIXES) or spec.endswith(".gguf")


def check_model(spec: str) -> None:
    """Refuse, in one line, a model spec that `agmask.models.load` would fail on for a reason visible without
    loading the weights: an unknown name, a missing embedded package, a missing path, a directory without a
    readable config or of an unsupported architecture, truncated safetensors, a file that is not GGUF."""
    from agmask.models import _unknown_model_message, embedded
    from agmask.models.tiny import TINY_ARCHS

    if spec.startswith("tiny:"):
        if spec.split(":", 1)[1] not in TINY_ARCHS:
            raise ModelError(f"unknown tiny model {spec!r} (choose {', '.join('tiny:' + a for a in TINY_ARCHS)})")
        return
    if spec.startswith("embedded:"):
        entry = embedded.lookup(spec.split(":", 1)[1])
        if not embedded.is_cached(entry):
            embedded.part_paths(entry)  # names the pip command when a package is missing
        return
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file {spec} does not exist")
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise ModelError(f"cannot read GGUF file {spec}: it does not start with the GGUF magic bytes")
        return
    if path.is_dir():
        check_model_dir(path)
        return
    if looks_like_path(spec):
        raise ModelError(f"model path {spec} does not exist; pass an existing model directory or .gguf file")
    if "/" not in spec:
        raise ModelError(_unknown_model_message(spec))


def check_model_dir(path: Path) -> None:
    from agmask.models.arch import ARCHITECTURES

    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path} is a directory without config.json; is it a Hugging Face model directory?")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ModelError(f"cannot load a model from {path}: config.json is not a JSON object ({e})") from None
    if ARCHITECTURES.get(model_type) is None:
        supported = ", ".join(k for k, v in ARCHITECTURES.items() if v is not None)
        raise ModelError(f"cannot load a model from {path}: architecture {model_type!r} is not supported "
                         f"(supported: {supported})")
    weights = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".pt"} and p.is_file())
    if not weights:
        raise ModelError(f"{path} has no weight files (*.safetensors or *.bin); is it a model directory?")
    from safetensors import safe_open

    for w in weights:
        if w.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(w), framework="pt"):
                pass
        except Exception as e:  # SafetensorError: truncated or not safetensors at all
            raise ModelError(f"cannot load a model from {path}: {w.name} is damaged ({str(e).splitlines()[0]})") from None


def model_num_layers(spec: str) -> int | None:
    """The number of decoder layers, when it is known without loading the weights (tiny models, local
    directories, cached embedded models); else None."""
    from agmask.models import embedded
    from agmask.models.tiny import TINY_SHAPES

    if spec.startswith("tiny:"):
        return TINY_SHAPES["num_hidden_layers"]
    if spec.startswith("embedded:"):
        entry = embedded.lookup(spec.split(":", 1)[1])
        config = embedded.cache_dir(entry) / "config.json" if embedded.is_cached(entry) else None
    else:
        config = Path(spec).expanduser() / "config.json"
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["num_hidden_layers"]) if config else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
