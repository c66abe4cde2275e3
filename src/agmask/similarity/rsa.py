"""Similarity matrices and representational similarity analysis (RSA).

RSA of two (P, P) similarity matrices = Spearman correlation of their strict upper triangles
(the P(P-1)/2 prompt pairs; the diagonal is 1 by construction and carries no information).
The permutation test (Mantel) relabels the prompts of one matrix, rows and columns together.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """(P, D) vectors -> (P, P) cosine similarities (a zero vector has similarity 0 to everything)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (P, 1)
    unit = x / np.where(norms > 0, norms, 1.0)
    return np.clip(unit @ unit.T, -1.0, 1.0)  # (P, P)


def upper(m: np.ndarray) -> np.ndarray:
    """The strict upper triangle of a square matrix as a vector of length P(P-1)/2."""
    i, j = np.triu_indices(m.shape[0], k=1)
    return m[i, j]


def rsa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman correlation of the upper triangles; None when either is constant (undefined)."""
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"need two square matrices of one shape, got {a.shape} and {b.shape}")
    ua, ub = upper(a), upper(b)
    if len(ua) < 2 or np.ptp(ua) == 0 or np.ptp(ub) == 0:
        return None
    return float(spearmanr(ua, ub).statistic)


def mantel_p(a: np.ndarray, b: np.ndarray, observed: float | None, n_perm: int, rng: np.random.Generator) -> float | None:
    """One-sided permutation p-value of RSA(a, b) >= observed, relabelling the prompts of `a`.

    Spearman = Pearson of ranks; relabelling prompts permutes a's pair values, so the ranks are
    computed once and each permutation is one gather and one dot product.
    """
    if observed is None or n_perm <= 0:
        return None
    p = a.shape[0]
    ranks_a = np.zeros_like(a, dtype=np.float64)
    i, j = np.triu_indices(p, k=1)
    ranks_a[i, j] = rankdata(a[i, j])
    ranks_a = ranks_a + ranks_a.T  # symmetric rank matrix, (P, P)
    rb = rankdata(b[i, j])
    rb = (rb - rb.mean()) / rb.std()
    hits = 0
    for _ in range(n_perm):
        perm = rng.permutation(p)
        ra = ranks_a[perm][:, perm][i, j]
        rho = float(((ra - ra.mean()) / ra.std() * rb).mean())
        hits += rho >= observed - 1e-12
    return (1 + hits) / (1 + n_perm)


def summarize_matrix(m: np.ndarray, groups: list[str]) -> dict:
    """Off-diagonal mean/std/min/max, the mean within each group and between different groups."""
    groups_arr = np.asarray(groups)
    off = ~np.eye(m.shape[0], dtype=bool)
    same = (groups_arr[:, None] == groups_arr[None, :]) & off
    out = {"offdiag_mean": float(m[off].mean()), "offdiag_std": float(m[off].std()),
           "offdiag_min": float(m[off].min()), "offdiag_max": float(m[off].max()),
           "between_groups_mean": float(m[off & ~same].mean()) if (off & ~same).any() else None, "within": {}}
    for g in dict.fromkeys(groups):
        sel = same & (groups_arr[:, None] == g)
        out["within"][g] = float(m[sel].mean()) if sel.any() else None
    return out


def layer_rsa(sem: np.ndarray, act: np.ndarray, groups: list[str], n_perm: int, rng: np.random.Generator) -> dict:
    """RSA of one layer's (P, P) activation matrix against the semantic one: over all prompts, and within
    each group (prompt set) of 3+ prompts. Across sets, both matrices mostly separate film questions
    from general ones; within a set, RSA asks whether wording-level similarity is mirrored too."""
    out = {"rsa": rsa(sem, act)}
    out["p_value"] = mantel_p(act, sem, out["rsa"], n_perm, rng)
    out["within"] = {}
    groups_arr = np.asarray(groups)
    for g in dict.fromkeys(groups):
        idx = np.flatnonzero(groups_arr == g)
        if len(idx) >= 3:
            s, a = sem[np.ix_(idx, idx)], act[np.ix_(idx, idx)]
            r = rsa(s, a)
            out["within"][g] = {"rsa": r, "p_value": mantel_p(a, s, r, n_perm, rng)}
    return out
