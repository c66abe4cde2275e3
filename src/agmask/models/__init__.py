"""Model loading: `load(spec) -> (model, tokenizer, info)`.

Specs: `embedded:<name>` (see `agmask models`), `tiny:llama` / `tiny:qwen2` (random, in memory),
a `.gguf` file, a local model directory, or a Hugging Face hub id.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from agmask.errors import ModelError
from agmask.files import atomic_dir, read_json, sha256_file, write_json
from agmask.home import agmask_home
from agmask.models.registry import DEFAULT_MODEL, EMBEDDED

__all__ = ["load", "identify", "prefetch", "ModelInfo", "DEFAULT_MODEL", "EMBEDDED", "resolve_dtype"]


@dataclass
class ModelInfo:
    spec: str
    kind: str  # embedded | tiny | gguf | local | hub
    sha256: str  # identifies the weights; part of every stage's input hash
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_parameters: int
    dtype: str
    device: str
    path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_dtype(device: str, dtype: str | None):
    """fp32 on CPU, bf16 on CUDA unless asked otherwise."""
    import torch

    name = dtype or ("bfloat16" if device.startswith("cuda") or device == "auto" else "float32")
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ModelError(f"unknown dtype {name!r} (choose float32, bfloat16 or float16)")
    return table[name]


def _cached_sha256(paths: list[Path]) -> list[str]:
    """sha256 of files, remembered by (path, size, mtime) under AGMASK_HOME so big weights hash once."""
    index_path = agmask_home() / "file-hashes.json"
    index = read_json(index_path) if index_path.is_file() else {}
    out, changed = [], False
    for f in paths:
        st = f.stat()
        key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in index:
            index[key] = sha256_file(f)
            changed = True
        out.append(index[key])
    if changed:
        write_json(index_path, index)
    return out


def _dir_sha256(path: Path) -> str:
    """sha256 over a model directory's weight files."""
    files = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".pt"} and p.is_file())
    if not files:
        raise ModelError(f"{path} has no weight files (*.safetensors or *.bin); is it a model directory?")
    digest = hashlib.sha256()
    for f, h in zip(files, _cached_sha256(files)):
        digest.update(f"{f.name}:{h}\n".encode())
    return digest.hexdigest()


def _tiny_sha256(spec: str, seed: int) -> str:
    from agmask.models.tiny import TINY_SHAPES

    return hashlib.sha256(f"{spec}:{seed}:{sorted(TINY_SHAPES.items())}".encode()).hexdigest()


def identify(spec: str, seed: int = 0) -> str:
    """The sha256 that identifies a model's weights, without loading it (part of every stage's input hash)."""
    if spec.startswith("tiny:"):
        return _tiny_sha256(spec, seed)
    if spec.startswith("embedded:"):
        from agmask.models import embedded

        return embedded.lookup(spec.split(":", 1)[1]).sha256
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file {spec} does not exist")
        return _cached_sha256([path])[0]
    if path.is_dir():
        return _dir_sha256(path)
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return _dir_sha256(_hub_snapshot(spec))
    raise ModelError(_unknown_model_message(spec))


def _unknown_model_message(spec: str) -> str:
    names = ", ".join(f"embedded:{n}" for n in EMBEDDED)
    return (f"unknown model {spec!r}: use {names}, tiny:llama, tiny:qwen2, a .gguf file, a local "
            "model directory or a Hugging Face id such as Qwen/Qwen2.5-3B-Instruct")


def _from_dir(path: Path, device: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": dtype}
    if device == "auto":
        kwargs["device_map"] = _auto_device_map(path, dtype)  # shards a model that does not fit one GPU
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except MemoryError:
        raise
    except Exception as e:  # OSError, SafetensorError, ValueError...: all mean "this directory is not loadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load a model from {path}: {first}") from e
    if device != "auto":
        model.to(device)
    return model, tokenizer


def _load_gguf_file(path: Path, log) -> tuple[Path, str]:
    """Dequantise a user GGUF file once into the cache, keyed by its sha256."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    import torch

    sha = _cached_sha256([path])[0]
    target = agmask_home() / "models" / f"gguf-{sha[:16]}"
    if (target / "agmask-source.json").is_file():
        return target, sha
    log(f"dequantising {path.name} to fp32 (once)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
    except Exception as e:  # gguf raises assorted errors on a corrupt file
        raise ModelError(f"cannot read GGUF file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "agmask-source.json", {"spec": str(path), "sha256": sha})
    return target, sha


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return Path(snapshot_download(repo_id, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as e:
        raise ModelError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}; offline or unknown id); "
            "download it elsewhere and pass the local directory with --model PATH"
        ) from e


def prefetch(spec: str, log: Callable[[str], None] = lambda msg: None) -> None:
    """Build whatever `load(spec)` would cache on first use (embedded or GGUF dequantisation, hub
    snapshot), without loading the model: several processes then load from a finished cache."""
    if spec.startswith("embedded:"):
        from agmask.models import embedded

        embedded.ensure_cached(embedded.lookup(spec.split(":", 1)[1]), log=log)
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if path.is_file():
            _load_gguf_file(path, log)
    elif "/" in spec and not spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
        _hub_snapshot(spec)


def ends_on_input_device(device_map: dict, prefix: str) -> dict:
    """A device map whose final norm and lm_head sit on the embeddings' device.

    A map over several GPUs may put the last layers and the lm_head on another GPU than the embeddings.
    Every caller builds masks, targets and references on the inputs' device (the embeddings'), so the
    final norm's and the lm_head's outputs must land there: placing those two modules there does it
    without hooks (accelerate moves their inputs to them). On one device the map is returned as is."""
    if len({str(d) for d in device_map.values()}) <= 1:
        return dict(device_map)

    def device_of(module: str):
        for key in sorted(device_map, key=len, reverse=True):  # the most specific entry that covers it
            if module == key or module.startswith(key + ".") or key == "":
                return device_map[key]
        return None

    home = device_of(f"{prefix}.embed_tokens")
    out = dict(device_map)
    for module in (f"{prefix}.norm", "lm_head"):
        if device_of(module) is not None and device_of(module) != home:
            out[module] = home
    return out


def _auto_device_map(path: Path, dtype) -> dict:
    """What `device_map="auto"` would choose (balanced over the visible GPUs), with the ends pinned home."""
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)), dtype=dtype)
    no_split = getattr(empty, "_no_split_modules", None) or []
    memory = get_balanced_memory(empty, dtype=dtype, no_split_module_classes=no_split)
    device_map = infer_auto_device_map(empty, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
    return ends_on_input_device(device_map, empty.base_model_prefix)


def load(spec: str = DEFAULT_MODEL, device: str = "cpu", dtype: str | None = None, seed: int = 0,
         log: Callable[[str], None] = lambda msg: None):
    """Load a model for analysis and unlearning. Returns (model, tokenizer, info); the model is in eval mode."""
    torch_dtype = resolve_dtype(device, dtype)
    path_str = None
    if spec.startswith("tiny:"):
        from agmask.models.tiny import tiny_model

        model, tokenizer = tiny_model(spec.split(":", 1)[1], seed=seed)
        model.to(device=device if device != "auto" else "cpu", dtype=torch_dtype)
        kind, sha = "tiny", _tiny_sha256(spec, seed)
    elif spec.startswith("embedded:"):
        from agmask.models import embedded

        entry = embedded.lookup(spec.split(":", 1)[1])
        directory = embedded.ensure_cached(entry, log=log)
        try:
            model, tokenizer = _from_dir(directory, device, torch_dtype)
        except ModelError as e:
            raise ModelError(f"{e}; the cache looks damaged: run `agmask models --clear {entry.name}`") from e
        kind, sha, path_str = "embedded", entry.sha256, str(directory)
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file {spec} does not exist")
        directory, sha = _load_gguf_file(path, log)
        model, tokenizer = _from_dir(directory, device, torch_dtype)
        kind, path_str = "gguf", str(path)
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"{spec} is a directory without config.json; is it a Hugging Face model directory?")
        sha = _dir_sha256(path)
        model, tokenizer = _from_dir(path, device, torch_dtype)
        kind, path_str = "local", str(path)
    elif "/" in spec and not spec.startswith((".", "/", "~")):
        path = _hub_snapshot(spec)
        sha = _dir_sha256(path)
        model, tokenizer = _from_dir(path, device, torch_dtype)
        kind, path_str = "hub", str(path)
    else:
        raise ModelError(_unknown_model_message(spec))
    from agmask.models.arch import arch_spec

    arch_spec(model)  # unsupported architectures fail here, with the list of supported ones
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # the base model is frozen everywhere; adapters opt their own params in
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cfg = model.config
    info = ModelInfo(
        spec=spec, kind=kind, sha256=sha, model_type=cfg.model_type, num_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_parameters=sum(p.numel() for p in model.parameters()), dtype=str(torch_dtype).replace("torch.", ""),
        device=device, path=path_str,
    )
    return model, tokenizer, info
