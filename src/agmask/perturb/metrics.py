"""Stability metrics over perturbed prompts: how much the answer moves when only the wording does.

Input rows are `perturb/outputs.jsonl` rows: one per (perturbed prompt, generation), where a
generation is the greedy one (`sample` = -1) or a sampled one (`sample` = 0..n-1); the scoring
fields (answer log-prob, multiple-choice share) are per prompt and repeat on each of its rows.
"""
from __future__ import annotations

import math
import statistics
import unicodedata
from collections import Counter

from agmask.perturb.families import LANGUAGE_PREFIX, ORIGINAL

GREEDY = -1  # the `sample` value of the greedy generation


def normalise(text: str) -> str:
    """Casefold, drop punctuation (any Unicode P* character: `Ocean's` -> `oceans`), collapse whitespace."""
    kept = "".join(c for c in text.casefold() if not unicodedata.category(c).startswith("P"))
    return " ".join(kept.split())


def extract_answer(generation: str, closing: str) -> tuple[str, bool]:
    """The generated text up to the closing quote, normalised, and whether the quote closed.

    The generation starts right after the lead (`The movie is "`), so the answer is what comes
    before `closing`; without a closing quote (too few tokens) it is the whole generation.
    """
    if closing and closing in generation:
        return normalise(generation.split(closing, 1)[0]), True
    return normalise(generation), not closing


def answer_stats(answers: list[str]) -> dict:
    """Consistency (share of the modal answer), distinct answers and entropy (bits) of a list of answers."""
    if not answers:
        return {"n": 0, "modal": None, "consistency": None, "distinct": 0, "entropy_bits": None}
    counts = Counter(answers)
    n = len(answers)
    modal, top = counts.most_common(1)[0]
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    return {"n": n, "modal": modal, "consistency": top / n, "distinct": len(counts), "entropy_bits": abs(entropy)}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation; (None, None) for no values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.pstdev(vals)


def _per_prompt(rows: list[dict]) -> dict[int, list[dict]]:
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(r["prompt_index"], []).append(r)
    return by


def group_stats(rows: list[dict], original_greedy: dict[int, str] | None = None) -> dict:
    """Stability of one family (or of all rows): answer spread, hit rate, log-prob and MC share spread.

    Spreads (`*_std`) are over prompts: each prompt counts once, whatever its number of samples.
    `flip_rate`: share of prompts whose greedy answer differs from the original prompt's greedy answer.
    """
    prompts = _per_prompt(rows)
    firsts = [rs[0] for rs in prompts.values()]  # the per-prompt scoring fields
    greedy = [r for r in rows if r["sample"] == GREEDY]
    pooled = answer_stats([r["answer"] for r in rows])
    hit_mean, hit_std = mean_std([statistics.fmean(float(r["hit"]) for r in rs) for rs in prompts.values()])
    lp_mean, lp_std = mean_std([r["answer_logprob"] for r in firsts])
    mc_mean, mc_std = mean_std([r["mc_share"] for r in firsts])
    within = [answer_stats([r["answer"] for r in rs])["consistency"] for rs in prompts.values()]
    out = {
        "n_prompts": len(prompts),
        "n_outputs": len(rows),
        "consistency": pooled["consistency"],
        "distinct_answers": pooled["distinct"],
        "entropy_bits": pooled["entropy_bits"],
        "modal_answer": pooled["modal"],
        "greedy_consistency": answer_stats([r["answer"] for r in greedy])["consistency"],
        "within_prompt_consistency": statistics.fmean(within) if within else None,
        "hit_rate": statistics.fmean(float(r["hit"]) for r in rows) if rows else None,
        "hit_rate_prompt_mean": hit_mean,
        "hit_rate_prompt_std": hit_std,
        "greedy_hit_rate": statistics.fmean(float(r["hit"]) for r in greedy) if greedy else None,
        "answer_logprob_mean": lp_mean,
        "answer_logprob_std": lp_std,
        "mc_share_mean": mc_mean,
        "mc_share_std": mc_std,
        "mc_top1_rate": mean_std([float(r["mc_top1"]) for r in firsts if r.get("mc_top1") is not None])[0],
        "changed_share": statistics.fmean(float(r["changed"]) for r in firsts) if firsts else None,
        "flip_rate": None,
    }
    if original_greedy is not None:
        pairs = [(r["base_index"], r["answer"]) for r in greedy if r["base_index"] in original_greedy]
        if pairs:
            out["flip_rate"] = statistics.fmean(float(a != original_greedy[b]) for b, a in pairs)
    return out


def family_order(families: list[str]) -> list[str]:
    """The original first, generated families in first-seen order, language families last."""
    seen = list(dict.fromkeys(families))
    lang = [f for f in seen if f.startswith(LANGUAGE_PREFIX)]
    rest = [f for f in seen if f != ORIGINAL and f not in lang]
    return ([ORIGINAL] if ORIGINAL in seen else []) + rest + lang


def stability(rows: list[dict]) -> dict:
    """Per family and overall stability, plus how each base prompt's greedy answer varies across families."""
    if not rows:
        return {"families": {}, "overall": group_stats([]), "per_base": {}}
    original_greedy = {r["base_index"]: r["answer"] for r in rows
                       if r["family"] == ORIGINAL and r["sample"] == GREEDY}
    families = {}
    for fam in family_order([r["family"] for r in rows]):
        fam_rows = [r for r in rows if r["family"] == fam]
        compare = original_greedy if fam != ORIGINAL and not fam.startswith(LANGUAGE_PREFIX) else None
        families[fam] = group_stats(fam_rows, compare)
    per_base = {}
    for b in sorted({r["base_index"] for r in rows if r["base_index"] is not None}):
        greedy = [r["answer"] for r in rows if r["base_index"] == b and r["sample"] == GREEDY]
        stats = answer_stats(greedy)
        per_base[str(b)] = {"greedy_answers_across_families": stats["distinct"],
                            "greedy_consistency": stats["consistency"], "modal": stats["modal"]}
    return {"families": families, "overall": group_stats(rows), "per_base": per_base}


def top_answers(rows: list[dict], k: int) -> list[tuple[str, int]]:
    """The k most frequent extracted answers over all rows (ties broken alphabetically, for determinism)."""
    counts = Counter(r["answer"] for r in rows)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
