"""Recommendation prompts under perturbation (issue 17, phase 1): does the recommended title survive rewording?

The write-up's setting: "prompt variations intended to be semantically identical yield inconsistent movie-title
recommendations". Base requests are `recommend_eval` items (spread over their `family` tags: genre, director,
...); every generated family rewrites each one (no language items: the spec has none for this set). Replies
start after the set's lead (`I recommend "`), so the extracted answer is the recommended title.

Different requests may rightly get different titles, so stability is measured per request, across its
wordings (original + every family): consistency (share of the modal title), distinct titles and entropy, for
the greedy title, for every generation (greedy + samples) and for the top candidate of the multiple-choice
view (deterministic: no sampling noise). Per family, `metrics.group_stats` gives the flip rate against the
original wording, the concept's hit rate (it is recommended) and its candidate share.
"""
from __future__ import annotations

import statistics

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.perturb.families import Variant, build_variants
from agmask.perturb.metrics import GREEDY, answer_stats, stability
from agmask.scoring import select_items

SET = "recommend_eval"
VIEWS = ("greedy", "all", "mc_top")  # which answers of a request's wordings are compared


def recommend_base_items(spec: ConceptSpec, n: int) -> list[PromptItem]:
    """Up to n `recommend_eval` items, spread over their family tags (empty when the concept has none)."""
    return [it for _, it in select_items(spec.items(SET), n)] if n else []


def recommend_variants(base: list[PromptItem], seed: int) -> tuple[list[Variant], list[PromptItem]]:
    """Every generated family applied to every base request (plus the originals), and the items to score."""
    variants = build_variants([it.prompt for it in base], [], seed)
    return variants, [PromptItem(prompt=v.prompt, family=v.family, lead=base[v.base_index].lead) for v in variants]


def _view_answers(rows: list[dict], view: str) -> list[str]:
    if view == "greedy":
        return [r["answer"] for r in rows if r["sample"] == GREEDY]
    if view == "all":
        return [r["answer"] for r in rows]
    per_prompt = {r["prompt_index"]: r["mc_top"] for r in rows}  # the scoring fields repeat on each row
    return [t for t in per_prompt.values() if t is not None]


def recommend_stability(rows: list[dict], base_prompts: list[str]) -> dict:
    """Per request: how its recommended titles vary across wordings (`VIEWS`), and the mean over requests;
    per family and overall: `metrics.stability` (flip rate vs the original wording, concept hit rate, ...)."""
    stab = stability(rows)
    per_request, means = {}, {}
    for b, prompt in enumerate(base_prompts):
        mine = [r for r in rows if r["base_index"] == b]
        per_request[str(b)] = {"prompt": prompt, "wordings": len({r["prompt_index"] for r in mine}),
                               **{v: answer_stats(_view_answers(mine, v)) for v in VIEWS}}
    for v in VIEWS:
        stats = [p[v] for p in per_request.values() if p[v]["n"]]
        means[v] = {key: statistics.fmean(s[key] for s in stats) if stats else None
                    for key in ("consistency", "distinct", "entropy_bits")}
    return {"families": stab["families"], "overall": stab["overall"], "per_request": per_request,
            "across_wordings": means}
