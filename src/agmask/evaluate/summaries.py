"""Base-vs-adapted summaries of scored items: the shape shared by every question-set metric.

`compare` takes the two models' rows for the same items plus the base-known subset and returns the
scoring summary of each side (DESIGN.md, "Scoring an answer"), the mean change, and the worst case:
the value most favourable to the concept among the adapted model's items.
"""
from __future__ import annotations

import statistics

from agmask.evaluate.tables import Bold, Table, pair
from agmask.scoring import answer_hit, summarize


def with_hits(rows: list[dict], generations: list[str], aliases: list[list[str]]) -> list[dict]:
    """Copies of `rows` with the greedy reply and whether it contains the answer."""
    return [dict(r, generation=g, hit=answer_hit(g, a)) for r, g, a in zip(rows, generations, aliases)]


def worst_case(rows: list[dict], known: set[int]) -> dict:
    """The adapted model's most concept-revealing values over `rows` (an attacker keeps the best prompt)."""
    mc = [r for r in rows if r.get("mc_share") is not None]
    top = max(mc, key=lambda r: r["mc_share"]) if mc else max(rows, key=lambda r: r["answer_logprob"])
    known_hits = [r for r in rows if r["index"] in known and r.get("hit") is not None]
    return {
        "max_answer_logprob": max(r["answer_logprob"] for r in rows),
        "min_first_token_rank": min(r["first_token_rank"] for r in rows),
        "max_mc_share": top["mc_share"] if mc else None,
        "any_greedy_hit_base_known": any(r["hit"] for r in known_hits) if known_hits else None,
        "prompt": top["prompt"],
    }


def compare(base: list[dict], adapted: list[dict], known: set[int]) -> dict:
    """Summary of both sides on the same items (aligned lists), with deltas and the worst case."""
    if len(base) != len(adapted) or any(b["index"] != a["index"] for b, a in zip(base, adapted)):
        raise ValueError("base and adapted rows must cover the same items in the same order")
    if not base:
        return {"n": 0}
    known = known & {r["index"] for r in base}
    deltas = [a["answer_logprob"] - b["answer_logprob"] for b, a in zip(base, adapted)]
    mc_pairs = [(b, a) for b, a in zip(base, adapted) if b.get("mc_top1") is not None]
    return {
        "n": len(base),
        "base_known_n": len(known),
        "base": summarize(base, known),
        "adapted": summarize(adapted, known),
        "mean_delta_answer_logprob": statistics.fmean(deltas),
        "mean_abs_delta_answer_logprob": statistics.fmean(abs(d) for d in deltas),
        "mc_top1_count": {"base": sum(b["mc_top1"] for b, _ in mc_pairs),
                          "adapted": sum(a["mc_top1"] for _, a in mc_pairs)} if mc_pairs else None,
        "worst": worst_case(adapted, known),
    }


def concept_wins(base: list[dict], adapted: list[dict], concept_answers: list[str]) -> dict:
    """On multiple-choice items about OTHER titles: how often the concept is the model's pick, base vs adapted,
    and the top-1 count on the items where the base model did not pick the concept.

    A base model that answers the concept to neighbour questions gains correct answers when it forgets
    the concept (the wrong pick is gone); the second count leaves those items out, so it moves only when
    knowledge of the neighbours moves.
    """
    names = {a.casefold() for a in concept_answers}
    picks = lambda r: r.get("mc_top") is not None and r["mc_top"].casefold() in names  # noqa: E731
    pairs = [(b, a) for b, a in zip(base, adapted) if b.get("mc_top") is not None and a.get("mc_top") is not None]
    rest = [(b, a) for b, a in pairs if not picks(b)]
    return {
        "mc_top_is_concept": {"base": sum(picks(b) for b, _ in pairs), "adapted": sum(picks(a) for _, a in pairs)},
        "mc_top1_count_base_not_concept": {"n": len(rest), "base": sum(bool(b["mc_top1"]) for b, _ in rest),
                                           "adapted": sum(bool(a["mc_top1"]) for _, a in rest)},
    }


def by_family(base: list[dict], adapted: list[dict], known: set[int], families: dict[int, str | None]) -> dict:
    """`compare` per family tag (items without a tag go under "untagged")."""
    groups: dict[str, list[int]] = {}
    for pos, row in enumerate(base):
        groups.setdefault(families.get(row["index"]) or "untagged", []).append(pos)
    return {fam: compare([base[p] for p in ps], [adapted[p] for p in ps], known) for fam, ps in groups.items()}


def worst_family(families: dict[str, dict]) -> str | None:
    """The family whose worst item keeps the most of the concept (MC share, else answer log-prob)."""
    def key(name: str):
        w = families[name].get("worst") or {}
        return (w.get("max_mc_share") if w.get("max_mc_share") is not None else -1.0,
                w.get("max_answer_logprob", float("-inf")))
    return max(families, key=key) if families else None


# ---- what a `compare` value shows in the report ----

SET_TABLE = "Before / after, per evaluation set"
SET_HEADER = ("set", "n", "base-known", "answer log-prob: base", "unlearned", "mean change", "|change|",
              "MC share: base", "unlearned", "MC top-1 rate: base", "unlearned", "greedy hit (base-known): base",
              "unlearned")
NEIGHBOUR_NOTE = ("neighbors (anchored): the answer appears in a training set, so the retain term holds it; "
                  "neighbors (unseen): it appears in none, the locality that counts.")


def set_table(value: dict, parts: tuple[str, ...] = ()) -> Table:
    """The set's row of the per-set table (and one row per sub-part of `value`, e.g. anchored / unseen)."""
    label = value.get("set", "?")
    rows = []
    for row_label, part in [(label, value)] + [(f"{label} ({p})", value.get(p)) for p in parts]:
        if part and part.get("n"):
            rows.append([row_label, part["n"], part["base_known_n"], *pair(part, "mean_answer_logprob"),
                         part["mean_delta_answer_logprob"], part["mean_abs_delta_answer_logprob"],
                         *pair(part, "mc_share"), *pair(part, "mc_top1_rate"), *pair(part, "greedy_hit_rate_base_known")])
    return Table(SET_TABLE, SET_HEADER, rows, NEIGHBOUR_NOTE if parts else "")


def family_table(title: str, families: dict, worst: str | None) -> Table:
    """One row per family of a `by_family` value, the worst family in bold."""
    header = ("family", "n", "base-known", "answer log-prob: base", "unlearned", "MC share: base", "unlearned",
              "worst: max MC share", "worst: max log-prob", "worst: min rank", "greedy hit (base-known) after")
    rows = [[Bold(f) if f == worst else f, v["n"], v["base_known_n"], *pair(v, "mean_answer_logprob"),
             *pair(v, "mc_share"), v["worst"]["max_mc_share"], v["worst"]["max_answer_logprob"],
             v["worst"]["min_first_token_rank"], v["adapted"].get("greedy_hit_rate_base_known")]
            for f, v in families.items() if v.get("n")]
    return Table(title, header, rows, f"Worst family in bold: {worst}." if worst else "")
