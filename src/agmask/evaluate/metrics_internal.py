"""Inside the model: how far the adapter moves the residual stream, and what the logit lens still sees."""
from __future__ import annotations

import statistics

import torch

from agmask.evaluate.context import EvalContext
from agmask.evaluate.internals import logit_lens_ranks
from agmask.evaluate.registry import metric
from agmask.evaluate.tables import Table
from agmask.scoring import BASE_KNOWN_RANK
from agmask.scoring.encode import closing_for, encode_answer, tokens

SHIFT_SETS = ("forget_eval", "retain_eval")


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(N, D) -> (N, 2) coordinates on the top two principal components, and their explained variance ratios."""
    centered = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    var = s**2
    ratio = (var / var.sum()).tolist() if float(var.sum()) > 0 else [0.0] * len(var)
    k = min(2, vh.shape[0])
    coords = centered @ vh[:k].T  # (N, k)
    if k < 2:
        coords = torch.cat([coords, torch.zeros(len(x), 2 - k)], dim=1)
    return coords, (ratio + [0.0, 0.0])[:2]


def shift_tables(shift: dict) -> list[Table]:
    return [Table("Activation shift", ("set", "n", "mean over layers", "max", "layer of max"),
                  [[s, v["n"], v["mean"], v["max"], v["max_layer"]] for s, v in shift["sets"].items()], shift["measure"])]


@metric("activation_shift", "internals", report=shift_tables)
def activation_shift(ctx: EvalContext) -> dict:
    """Per-layer relative L2 distance ||h_adapted - h_base|| / ||h_base|| of the last-token residual; PCA of both."""
    acts, sets = {}, {}
    for set_name in SHIFT_SETS:
        ids = [tokens(ctx.tokenizer, ctx.prefix(set_name, it, "lead")) for _, it in ctx.items(set_name)]
        for which in ("base", "adapted"):
            acts[which, set_name] = ctx.last_resid(which, ids)
        base, adapted = acts["base", set_name], acts["adapted", set_name]  # (N, L, H)
        rel = (adapted - base).norm(dim=-1) / base.norm(dim=-1).clamp(min=1e-12)  # (N, L)
        per_layer = rel.mean(0).tolist()
        sets[set_name] = {"n": len(ids), "per_layer": per_layer, "mean": statistics.fmean(per_layer),
                          "max": max(per_layer), "max_layer": int(torch.tensor(per_layer).argmax())}
    layer = sets["forget_eval"]["max_layer"]  # the layer where the forget prompts moved most
    groups = [(w, s) for s in SHIFT_SETS for w in ("base", "adapted")]
    stacked = torch.cat([acts[g][:, layer] for g in groups])  # (4N, H)
    coords, ratio = pca_2d(stacked)
    points, lo = {}, 0
    for g in groups:
        n = len(acts[g])
        points[f"{g[0]}/{g[1]}"] = [[round(float(a), 5), round(float(b), 5)] for a, b in coords[lo : lo + n]]
        lo += n
    return {"measure": "mean over prompts of ||h_adapted - h_base|| / ||h_base||, residual after each layer, "
                       "last token of prompt + lead",
            "layers": len(sets["forget_eval"]["per_layer"]), "sets": sets,
            "pca": {"layer": layer, "explained_variance_ratio": ratio, "points": points}}


def _lens_inputs(ctx: EvalContext, set_name: str) -> tuple[list[list[int]], list[int]]:
    """Token ids up to (not including) the answer's first token, and that token, per item."""
    ids, targets = [], []
    for _, item in ctx.items(set_name):
        close = closing_for(ctx.spec.lead_for(set_name, item))
        enc = encode_answer(ctx.tokenizer, ctx.prefix(set_name, item, "lead"), ctx.spec.answers_for(item)[0] + close)
        ids.append(enc.input_ids[: enc.answer_start])
        targets.append(enc.input_ids[enc.answer_start])
    return ids, targets


def _lens_summary(ranks: torch.Tensor) -> dict:
    best = ranks.min(dim=1).values.float()  # (N,) best rank over layers
    return {"mean_best_rank": float(best.mean()), "median_best_rank": float(best.median()),
            "share_best_rank_le_5": float((best <= BASE_KNOWN_RANK).float().mean()),
            "best_layer_mode": int(ranks.argmin(dim=1).mode().values),
            "per_layer_mean_log10_rank": ranks.float().log10().mean(0).tolist()}


def lens_tables(lens: dict) -> list[Table]:
    header = ("set", "n", "mean best rank: base", "unlearned", "median: base", "unlearned", "share <= 5: base",
              "unlearned")
    keys = ("mean_best_rank", "median_best_rank", "share_best_rank_le_5")
    return [Table("Logit lens: best rank of the answer's first token over layers", header,
                  [[s, v["n"], *[v[w][k] for k in keys for w in ("base", "adapted")]] for s, v in lens["sets"].items()])]


@metric("logit_lens", "internals", report=lens_tables)
def logit_lens(ctx: EvalContext) -> dict:
    """Best rank of the answer's first token over all layers (final norm + lm_head on each residual), before/after."""
    sets = {}
    for set_name in ctx.config.lens_sets:
        ids, targets = _lens_inputs(ctx, set_name)  # usually the same ids as the activation shift's
        sets[set_name] = {"n": len(ids)}
        for which in ("base", "adapted"):
            resid = ctx.last_resid(which, ids)
            with ctx.use(which) as model:  # the lens uses the same final norm and lm_head either way
                sets[set_name][which] = _lens_summary(logit_lens_ranks(model, resid, targets))
    return {"sets": sets}
