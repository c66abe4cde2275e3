"""Stage 4, similarity: do prompts that mean the same thing activate the same neurons? (seed figure 6)

Semantic similarity = cosine of MiniLM sentence embeddings; activation similarity = cosine of the
probe stage's activations (MLP neurons, and the residual stream), per layer, at the `last` position
(the token that predicts the answer). RSA per layer = Spearman correlation of the two matrices'
upper triangles, with a permutation (Mantel) p-value. Prompts: forget_eval + neighbors + retain_eval
as the probe stored them (each set in its file order).

Writes `similarity/similarity.json`, `similarity/matrices.png` and `similarity/rsa_layers.png`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal
from pathlib import Path

import numpy as np

from agmask.config import NonNegativeInt, nearest, stage_options
from agmask.errors import StageError
from agmask.files import load_tensors, read_json, write_json
from agmask.scoring import QA_SETS
from agmask.similarity import semantic
from agmask.similarity.figures import matrices_figure, rsa_figure
from agmask.similarity.rsa import cosine_matrix, layer_rsa, summarize_matrix

NAME = "similarity"
DIR = "similarity"
DEPENDS: tuple[str, ...] = ("probe",)
POSITIONS = ("last", "answer")
KINDS = ("mlp", "resid")
PRIMARY = "mlp"  # the neuron index space masks are built in


@stage_options
class Config:
    sets: tuple[str, ...] = field(default=("forget_eval", "neighbors", "retain_eval"),
                                  metadata={"help": "prompt sets compared (as probed, in this order)"})
    position: Literal["last", "answer"] = field(default="last", metadata={
        "help": "probe position: last (predicts the answer) or answer"})
    kinds: tuple[str, ...] = field(default=KINDS, metadata={"help": "activation kinds: mlp, resid"})
    max_items: NonNegativeInt = field(default=0, metadata={"help": "prompts per set; 0 = all that the probe stored"})
    permutations: NonNegativeInt = field(default=999, metadata={"help": "Mantel permutations per layer; 0 = no p-values"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "sets", tuple(self.sets))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not self.sets:
            raise ValueError("sets must name at least one prompt set")
        unknown = [name for name in self.sets if name not in QA_SETS]
        if unknown:
            raise ValueError(f"sets: {unknown[0]!r}{nearest(unknown[0], QA_SETS)} is not a set the probe stores "
                             f"({', '.join(QA_SETS)})")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}")
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise ValueError(f"kinds must be a non-empty subset of {', '.join(KINDS)}")
        if self.max_items < 0 or self.permutations < 0:
            raise ValueError("max_items and permutations must be >= 0")


PRESETS = {"demo": {"permutations": 199}, "full": {}}


def load_probe(run_dir: Path, conf: Config) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The prompts (set, index, prompt) and {kind: (P, L, D) float32} activations, sets concatenated."""
    probe_dir = Path(run_dir) / "probe"
    if not (probe_dir / "keys.json").is_file():
        raise StageError(f"no probe artefacts in {run_dir}: run `agmask probe --run-dir {run_dir}` first")
    keys = read_json(probe_dir / "keys.json")
    tensors = load_tensors(probe_dir / keys["file"])
    missing = [s for s in conf.sets if s not in keys["sets"]]
    if missing:
        raise StageError(f"the probe stored no set {', '.join(missing)} (it has: {', '.join(keys['sets'])}); "
                         f"choose others with --set similarity.sets=[...]")
    prompts, acts = [], {k: [] for k in conf.kinds}
    for s in conf.sets:
        stored = keys["sets"][s]["prompts"]
        n = min(len(stored), conf.max_items or len(stored))
        prompts += [{"set": s, "index": i, "prompt": p} for i, p in enumerate(stored[:n])]
        for kind in conf.kinds:
            t = tensors[f"{s}.{conf.position}.{kind}"]  # (items, layers, dim) float16
            if t.shape[0] != len(stored):
                raise StageError(f"probe artefacts disagree on set {s} ({t.shape[0]} rows, {len(stored)} prompts); "
                                 "rerun `agmask probe --force`")
            acts[kind].append(t[:n].float().numpy())
    if len(prompts) < 3:
        raise StageError(f"similarity needs at least 3 prompts, the sets {', '.join(conf.sets)} give {len(prompts)}")
    return prompts, {k: np.concatenate(v) for k, v in acts.items()}  # (P, L, D)


def _rounded(m: np.ndarray) -> list[list[float]]:
    return np.round(m, 4).tolist()


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    out_dir = Path(run_dir) / DIR
    prompts, acts = load_probe(Path(run_dir), conf)
    groups = [p["set"] for p in prompts]
    session.reporter.log(f"similarity: embedding {len(prompts)} prompts with {semantic.MODEL_NAME}")
    sem = cosine_matrix(semantic.load_embedder()([p["prompt"] for p in prompts]))  # (P, P)
    rng = np.random.default_rng(cfg.seed)

    n_layers = next(iter(acts.values())).shape[1]
    off = ~np.eye(len(prompts), dtype=bool)
    layers, act_mats = {}, {}
    with session.reporter.task("RSA per layer", n_layers * len(acts)) as advance:
        for kind, a in acts.items():
            act_mats[kind] = [cosine_matrix(a[:, layer]) for layer in range(n_layers)]  # L x (P, P)
            layers[kind] = []
            for i, m in enumerate(act_mats[kind]):
                layers[kind].append({"layer": i, **layer_rsa(sem, m, groups, conf.permutations, rng),
                                     "activation_offdiag_mean": float(m[off].mean())})
                advance(1)

    primary = PRIMARY if PRIMARY in acts else next(iter(acts))
    rhos = {kind: [d["rsa"] for d in entries] for kind, entries in layers.items()}
    best = int(np.argmax([-np.inf if r is None else r for r in rhos[primary]]))
    middle = n_layers // 2
    write_json(out_dir / "similarity.json", {
        "semantic_model": semantic.MODEL_NAME, "position": conf.position, "primary_kind": primary,
        "config": dataclasses.asdict(conf), "num_layers": n_layers, "num_prompts": len(prompts),
        "rsa": "Spearman rho between the upper triangles (prompt pairs) of the semantic and activation cosine "
               "matrices, over all prompts and `within` each set; p_value: one-sided permutation (Mantel) test",
        "best_layer": best, "middle_layer": middle, "best_rsa": rhos[primary][best],
        "layers": layers, "prompts": prompts,
        "summary": {"semantic": summarize_matrix(sem, groups),
                    "activation_best": summarize_matrix(act_mats[primary][best], groups),
                    "activation_middle": summarize_matrix(act_mats[primary][middle], groups)},
        "matrices": {"semantic": _rounded(sem), f"{primary}_layer_{best}": _rounded(act_mats[primary][best]),
                     f"{primary}_layer_{middle}": _rounded(act_mats[primary][middle])},
    })
    label = f"{session.spec.name}: {session.cfg.model}"
    panels = [("semantic (MiniLM sentence embeddings)", sem),
              (f"{primary} activations, layer {best} (best RSA {_fmt(rhos[primary][best])})", act_mats[primary][best])]
    if middle != best:
        panels.append((f"{primary} activations, layer {middle} (middle, RSA {_fmt(rhos[primary][middle])})",
                       act_mats[primary][middle]))
    matrices_figure(panels, groups, out_dir / "matrices.png",
                    f"Semantic vs activation similarity of {len(prompts)} prompts ({conf.position} token) — {label}")
    rsa_figure(layers, primary, best, out_dir / "rsa_layers.png", f"Representational similarity per layer — {label}")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
