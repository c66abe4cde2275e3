"""Recommendation metrics (issue 17): the adapted model should stop recommending the concept and keep the
rest of its recommendations. Both read the concept's `recommend_eval` prompts (up to `max_items`, spread
over their `family` tags), answered after the set's lead (`I recommend "` unless the concept sets another),
so every reply starts with the recommended title.

- `recommendation_rate`: N sampled replies per prompt (temperature 1, `recommend_samples`; the same seed for
  base and adapted): the share naming the concept (any alias), and the other titles named in them.
- `recommendation_preference`: the candidate distribution after the lead (the multiple-choice view over
  `concept.candidates`): the concept's share vs chance; with the concept removed and the rest renormalised,
  KL(base || adapted), the share of prompts whose top remaining title is unchanged, the distinct top titles
  across prompts (collapse onto one substitute shows here), and each prompt's top 3 titles before and after.
  Where the top title changed, the base's margin says how close the call was: the base's renormalised
  probability of its own top title minus that of the adapted top title (a near tie flips on a small shift).

A concept without `recommend_eval` gets `{"skipped": why}` from both: a note, not an error.
Several processes: prompts are split over them; sampled replies then come from other random streams than
in one process (same distribution, another draw).
"""
from __future__ import annotations

import statistics
from collections import Counter

import torch

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.distributed import map_sharded
from agmask.evaluate.context import EvalContext
from agmask.evaluate.registry import metric
from agmask.evaluate.tables import Lines, Table, fmt
from agmask.files import write_jsonl
from agmask.perturb.metrics import extract_answer, normalise
from agmask.scoring import answer_hit, candidate_logprobs, generate, prefix_for, select_items
from agmask.scoring.encode import closing_for
from agmask.scoring.preference import kl_remaining, remaining_log_distribution, remaining_titles, top_titles

SET = "recommend_eval"
TEMPERATURE = 1.0  # sampling as a user meets the model: the distribution itself, no nucleus cut
SAMPLE_SEED = 0  # base and adapted draw with the same seed
SAMPLES_FILE = "recommendations.jsonl"
TOP_K = 3
MOST_NAMED = 5


def skip_reason(spec: ConceptSpec) -> str | None:
    if spec.recommend_eval:
        return None
    return (f"concept {spec.name} has no recommend_eval set: add open recommendation prompts (see the README's "
            "concept files) to measure recommendations")


def recommend_items(ctx: EvalContext) -> list[tuple[int, PromptItem]]:
    return select_items(ctx.spec.items(SET), ctx.config.max_items)


# ---- pure functions (known-answer tests) ----

def titles_named(text: str, spec: ConceptSpec) -> list[str]:
    """The candidates a reply names (case-insensitive; the concept through any of its aliases), in list order."""
    return [c for c in spec.candidates
            if answer_hit(text, spec.answers if spec.is_concept_answer(c) else [c])]


def sample_stats(samples: list[list[str]], spec: ConceptSpec, closing: str) -> dict:
    """Per-prompt and pooled view of sampled replies: the share naming the concept, the other candidates named
    and the distinct titles written before the closing quote (the concept excluded from both)."""
    rates = [statistics.fmean(float(answer_hit(s, spec.answers)) for s in replies) if replies else None
             for replies in samples]
    flat = [s for replies in samples for s in replies]
    named = Counter(t for s in flat for t in titles_named(s, spec) if not spec.is_concept_answer(t))
    concept = [normalise(a) for a in spec.answers]
    extracted = Counter()
    for s in flat:
        title, closed = extract_answer(s, closing)  # normalised: case and punctuation folded
        if closed and title and not any(a in title for a in concept):
            extracted[title] += 1
    known = [r for r in rates if r is not None]
    return {"rate": statistics.fmean(known) if known else None, "per_prompt_rates": rates,
            "samples": len(flat), "distinct_titles_named": len(named),
            "distinct_extracted_titles": len(extracted),
            "most_named": sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))[:MOST_NAMED]}


def preference_stats(base: torch.Tensor, adapted: torch.Tensor, candidates: list[str], drop: list[int],
                     k: int = TOP_K) -> dict:
    """Compare (N, C) base and adapted candidate log-probs of N prompts (`drop`: the concept's columns)."""
    rest = remaining_titles(candidates, drop)
    share = {w: lp.softmax(-1)[:, drop].sum(-1) for w, lp in (("base", base), ("adapted", adapted))}  # (N,)
    remaining = {w: remaining_log_distribution(lp, drop) for w, lp in (("base", base), ("adapted", adapted))}
    top_index = {w: lp.argmax(-1).tolist() for w, lp in remaining.items()}  # (N,) columns of `rest`
    top_rest = {w: [rest[i] for i in idx] for w, idx in top_index.items()}
    base_rest = remaining["base"].exp()
    margins = [None if b == a else (base_rest[n, b] - base_rest[n, a]).item()
               for n, (b, a) in enumerate(zip(top_index["base"], top_index["adapted"]))]
    kl = kl_remaining(base, adapted, drop)  # (N,)
    sides = {}
    for w, lp in (("base", base), ("adapted", adapted)):
        top1 = lp.argmax(-1).tolist()
        counts = Counter(top_rest[w])
        sides[w] = {"concept_share": share[w].mean().item(), "concept_top1": sum(i in drop for i in top1),
                    "distinct_top_remaining": len(counts),
                    "top_remaining_counts": sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
    unchanged = [a == b for a, b in zip(top_rest["base"], top_rest["adapted"])]
    per_prompt = [{"concept_share": {"base": share["base"][n].item(), "adapted": share["adapted"][n].item()},
                   "top": {"base": top_titles(base[n], candidates, k), "adapted": top_titles(adapted[n], candidates, k)},
                   "top_remaining": {"base": top_rest["base"][n], "adapted": top_rest["adapted"][n]},
                   "top_remaining_unchanged": unchanged[n], "changed_base_margin": margins[n],
                   "kl_remaining": kl[n].item()}
                  for n in range(base.shape[0])]
    return {"n": base.shape[0], "chance_share": len(drop) / len(candidates), **sides,
            "kl_remaining_mean": kl.mean().item(), "kl_remaining_max": kl.max().item(),
            "top_remaining_unchanged": statistics.fmean(float(u) for u in unchanged),
            "changed_base_margins": sorted(m for m in margins if m is not None),
            "distinct_top_remaining_ratio": sides["adapted"]["distinct_top_remaining"]
            / sides["base"]["distinct_top_remaining"],
            "per_prompt": per_prompt}


# ---- what they show (report section "recommendations", summary line "recommendations (...)") ----

SUMMARY = ("Recommendations: base vs unlearned", ("measure", "base", "unlearned"))


def _note(v: dict) -> str:
    return (f"Open recommendation prompts ({v.get('set', SET)}), replies after the lead {v['lead']!r}: the candidate "
            "distribution is the softmax over the concept's candidates; \"without the concept\" removes it and "
            "renormalises the rest.")


def _line(v: dict) -> str:
    return f"recommendations ({v.get('set', SET)}, n={v['n']})"


def rate_tables(rate: dict) -> list[Table]:
    b, a = rate["base"], rate["adapted"]
    rows = [[f"concept named in a sampled reply ({rate['samples_per_prompt']} per prompt, temperature "
             f"{rate['temperature']})", b["rate"], a["rate"]],
            ["distinct other candidates named in the samples", b["distinct_titles_named"], a["distinct_titles_named"]],
            ["distinct other titles written before the closing quote", b["distinct_extracted_titles"],
             a["distinct_extracted_titles"]],
            ["most named other candidates", b["most_named"], a["most_named"]]]
    per_prompt = [[p["prompt"], p["family"], p["rate"]["base"], p["rate"]["adapted"]] for p in rate["per_prompt"]]
    return [Table(*SUMMARY, rows, _note(rate)),
            Table("Per prompt: sampled replies naming the concept", ("prompt", "kind", "named: base", "unlearned"),
                  per_prompt)]


def rate_headline(rate: dict) -> list[tuple[str, str]]:
    return [(_line(rate), f"sampled replies naming the concept {fmt(rate['base']['rate'])} -> "
                          f"{fmt(rate['adapted']['rate'])} ({rate['samples_per_prompt']} per prompt)")]


def _titles(top: list) -> Lines:
    return Lines(tuple(f"{t} ({p:.2f})" for t, p in top))


def preference_tables(pref: dict) -> list[Table]:
    b, a = pref["base"], pref["adapted"]
    rows = [[f"concept's share of the candidate distribution (chance {fmt(pref['chance_share'], '.3f')})",
             b["concept_share"], a["concept_share"]],
            [f"prompts where the concept is the top candidate (of {pref['n']})", b["concept_top1"], a["concept_top1"]],
            ["distinct top titles without the concept", b["distinct_top_remaining"], a["distinct_top_remaining"]],
            ["KL(base || unlearned) over the other candidates, renormalised: mean (max)", None,
             f"{fmt(pref['kl_remaining_mean'], '.4f')} ({fmt(pref['kl_remaining_max'], '.4f')})"],
            ["share of prompts whose top title without the concept is unchanged", None, pref["top_remaining_unchanged"]],
            ["where it changed: the base's margin of its top title over the new one (renormalised)", None,
             _margins(pref)]]
    per_prompt = [[p["prompt"], p["family"], p["concept_share"]["base"], p["concept_share"]["adapted"],
                   _titles(p["top"]["base"]), _titles(p["top"]["adapted"]), p["top_remaining_unchanged"],
                   p["kl_remaining"]] for p in pref["per_prompt"]]
    header = ("prompt", "kind", "share: base", "unlearned", "top 3 before", "top 3 after", "top without concept kept",
              "KL without concept")
    return [Table(*SUMMARY, rows, _note(pref)), Table("Per prompt: top 3 titles before and after", header, per_prompt)]


def _margins(pref: dict) -> str:
    margins = pref.get("changed_base_margins")  # absent from metrics written before it was measured
    return "-" if margins is None else ", ".join(f"{m:.2f}" for m in margins) or "none changed"


def preference_headline(pref: dict) -> list[tuple[str, str]]:
    return [(_line(pref), f"candidate share {fmt(pref['base']['concept_share'])} -> "
                          f"{fmt(pref['adapted']['concept_share'])} (chance {fmt(pref['chance_share'])})"),
            (_line(pref), f"without it: KL {fmt(pref['kl_remaining_mean'], '.3f')}, top title kept on "
                          f"{fmt(pref['top_remaining_unchanged'])} of prompts{_changed_note(pref)}, "
                          "distinct top titles "
                          f"{pref['base']['distinct_top_remaining']} -> {pref['adapted']['distinct_top_remaining']}")]


def _changed_note(pref: dict) -> str:
    margins = pref.get("changed_base_margins")
    return f" (where it changed, the base's margin was {_margins(pref)})" if margins else ""


# ---- the metrics ----

def _prompt_fields(pairs: list[tuple[int, PromptItem]]) -> list[dict]:
    return [{"index": i, "prompt": it.prompt, "family": it.family} for i, it in pairs]


@metric("recommendation_rate", "forget", report=rate_tables, headline=rate_headline, section="recommendations")
def recommendation_rate(ctx: EvalContext) -> dict:
    """recommend_eval: share of sampled replies (temperature 1) naming the concept, base vs adapted; titles named."""
    reason = skip_reason(ctx.spec) or (None if ctx.config.recommend_samples else "recommend_samples is 0")
    if reason:
        return {"skipped": reason}
    pairs = recommend_items(ctx)
    n = ctx.config.recommend_samples
    prefixes = [prefix_for(ctx.tokenizer, ctx.spec, SET, it) for _, it in pairs]
    for which in ("base", "adapted"):  # recommendation_preference's scores, first: the samples start from their keys
        _candidate_matrix(ctx, which, [it for _, it in pairs])
    closing = closing_for(ctx.spec.lead_for(SET))
    samples, stats = {}, {}
    for which in ("base", "adapted"):
        with ctx.use(which) as model, ctx.reporter.task(f"sampling {SET} ({which}, {n} each)", len(pairs)) as advance:
            samples[which] = map_sharded(
                lambda ps: generate(model, ctx.tokenizer, ps, max_new_tokens=ctx.config.recommend_tokens,
                                    batch_size=max(1, ctx.config.generation_batch_size // n), do_sample=True,
                                    temperature=TEMPERATURE, num_return_sequences=n, seed=SAMPLE_SEED,
                                    on_batch=advance, kv=ctx.kv(which)), prefixes)
        stats[which] = sample_stats(samples[which], ctx.spec, closing)
    rows = [{**fields, "lead": ctx.spec.lead_for(SET, it), "base": samples["base"][k],
             "adapted": samples["adapted"][k]}
            for k, (fields, (_, it)) in enumerate(zip(_prompt_fields(pairs), pairs))]
    write_jsonl(ctx.out_dir / SAMPLES_FILE, rows)
    per_prompt = [{**fields, "rate": {w: stats[w]["per_prompt_rates"][k] for w in stats}}
                  for k, fields in enumerate(_prompt_fields(pairs))]
    for w in stats:
        del stats[w]["per_prompt_rates"]
    return {"set": SET, "n": len(pairs), "samples_per_prompt": n, "temperature": TEMPERATURE,
            "tokens": ctx.config.recommend_tokens, "lead": ctx.spec.lead_for(SET), "file": SAMPLES_FILE,
            **stats, "per_prompt": per_prompt}


def _candidate_matrix(ctx: EvalContext, which: str, items: list[PromptItem]) -> torch.Tensor:
    """(N, C) candidate log-probs of the items after the set's lead (memoised: both metrics read them)."""
    return ctx.memo(("candidates", SET, which, tuple(it.prompt for it in items)),
                    lambda: _score_candidates(ctx, which, items))


def _score_candidates(ctx: EvalContext, which: str, items: list[PromptItem]) -> torch.Tensor:
    with ctx.use(which) as model, ctx.reporter.task(f"scoring {SET} candidates ({which})", len(items)) as advance:
        def score(part: list[PromptItem]) -> list[list[float]]:
            rows = []
            for it in part:
                rows.append(candidate_logprobs(model, ctx.tokenizer, ctx.spec, SET, it, kv=ctx.kv(which)))
                advance(1)
            return rows

        return torch.tensor(map_sharded(score, items), dtype=torch.float64)


@metric("recommendation_preference", "locality", report=preference_tables, headline=preference_headline,
        section="recommendations")
def recommendation_preference(ctx: EvalContext) -> dict:
    """recommend_eval candidate distribution: concept share vs chance; without the concept: KL, top title kept, distinct tops."""
    reason = skip_reason(ctx.spec)
    if reason:
        return {"skipped": reason}
    pairs = recommend_items(ctx)
    items = [it for _, it in pairs]
    base, adapted = _candidate_matrix(ctx, "base", items), _candidate_matrix(ctx, "adapted", items)
    stats = preference_stats(base, adapted, list(ctx.spec.candidates), ctx.spec.concept_candidates())
    stats["per_prompt"] = [{**fields, **row} for fields, row in zip(_prompt_fields(pairs), stats["per_prompt"])]
    return {"set": SET, "lead": ctx.spec.lead_for(SET), "candidates": len(ctx.spec.candidates), **stats}
