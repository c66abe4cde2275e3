"""Forgetting per answer format: the evaluation sets scored again in shapes training never used.

One row per (format, set): the set comparison of `summaries.compare` (base-known = base first-token
rank <= 5 in that format), neighbours also split into anchored and unseen. Per format, `concept`
summarises the concept's own questions (forget_eval and probes items whose answer is the concept): how
often base and adapted model pick it (top-1 among the candidates, or among the letters) and its mean
share, against chance. `worst_format` is the format whose adapted model picks the concept most often
(then: the highest share over chance): the headline shows it.
"""
from __future__ import annotations

import statistics

from agmask.distributed import map_sharded
from agmask.evaluate.context import EvalContext
from agmask.evaluate.formats import LETTER, SET_LEAD, letter_question, score_letter, unseen_leads, with_lead
from agmask.evaluate.registry import metric
from agmask.evaluate.summaries import compare
from agmask.evaluate.tables import Bold, Table, fmt, pair
from agmask.scoring import BASE_KNOWN_RANK, score_item

CONCEPT_SETS = ("forget_eval", "probes")


def _rows(ctx: EvalContext, fmt: str, set_name: str, which: str) -> list[dict]:
    """Score rows of the selected items of `set_name` in format `fmt`, for the base or the adapted model."""
    if fmt == SET_LEAD:
        return ctx.scores(set_name, which)
    pairs = ctx.items(set_name)
    if fmt == LETTER:
        questions = [letter_question(ctx.spec, set_name, i, it, ctx.config.letter_options) for i, it in pairs]
        with ctx.use(which) as model:
            kv = ctx.kv(which).lookup_only()  # the question's tokens are cached; its options are asked once
            return map_sharded(lambda part: [score_letter(model, ctx.tokenizer, q, set_name, i, kv=kv) for i, q in part],
                               [(i, q) for (i, _), q in zip(pairs, questions)])
    lead = fmt.removeprefix("lead=")
    with ctx.use(which) as model:
        return map_sharded(lambda part: [dict(score_item(model, ctx.tokenizer, ctx.spec, set_name, i, with_lead(it, lead),
                                                         kv=ctx.kv(which)).to_dict(), index=i) for i, it in part],
                           pairs)


def _compare(base: list[dict], adapted: list[dict], keep: set[int] | None = None) -> dict:
    if keep is not None:
        base, adapted = [r for r in base if r["index"] in keep], [r for r in adapted if r["index"] in keep]
    known = {r["index"] for r in base if r["first_token_rank"] <= BASE_KNOWN_RANK}
    return compare(base, adapted, known)


def _concept_view(rows: list[dict], chance: float) -> dict:
    mc = [r for r in rows if r.get("mc_share") is not None]
    share = statistics.fmean(r["mc_share"] for r in mc) if mc else None
    return {"n": len(mc), "top1_count": sum(bool(r["mc_top1"]) for r in mc),
            "top1_rate": statistics.fmean(float(r["mc_top1"]) for r in mc) if mc else None,
            "share": share, "chance": chance, "share_over_chance": None if share is None else share / chance}


def formats_tables(af: dict) -> list[Table]:
    """The concept's pick per format (worst in bold), then every set per format."""
    if not af.get("formats"):
        return []
    worst = af.get("worst_format")
    concept = [[Bold(f) if f == worst else f, v["concept"]["adapted"]["n"], v["concept"]["base"]["top1_count"],
                v["concept"]["adapted"]["top1_count"], v["concept"]["base"]["share"], v["concept"]["adapted"]["share"],
                v["concept"]["adapted"]["chance"]] for f, v in af["formats"].items()]
    note = ("set_lead: each set's own lead; lead=...: another lead; letter: a lettered multiple-choice question "
            f"scored by the letter's probability. Worst format in bold: {worst}.")
    rows = [[f, label, v["n"], v.get("base_known_n"), *pair(v, "mc_share"),
             *[(v.get("mc_top1_count") or {}).get(w) for w in ("base", "adapted")], v.get("mean_abs_delta_answer_logprob")]
            for f, fv in af["formats"].items() for label, v in fv["sets"].items() if v.get("n")]
    skipped = af.get("skipped_leads")
    return [Table("Answer formats training never used", ("format", "concept questions", "concept picked: base",
                                                         "unlearned", "share: base", "unlearned", "chance"), concept, note),
            Table("Answer formats: every set per format", ("format", "set", "n", "base-known", "MC share: base",
                                                           "unlearned", "MC top-1: base", "unlearned",
                                                           "|change in answer log-prob|"), rows,
                  f"Leads left out (training uses them): {', '.join(skipped)}" if skipped else "")]


def format_headline(af: dict) -> list[tuple[str, str]]:
    """The answer format whose adapted model picks the concept most often."""
    worst = af.get("worst_format")
    if not worst:
        return []
    c = af["formats"][worst]["concept"]
    return [("forget", f"worst answer format {worst} (concept picked {c['base']['top1_count']} -> "
                       f"{c['adapted']['top1_count']} of {c['adapted']['n']}, share {fmt(c['base']['share'])} -> "
                       f"{fmt(c['adapted']['share'])}, chance {fmt(c['adapted']['chance'])})")]


@metric("answer_formats", "forget", report=formats_tables, headline=format_headline)
def answer_formats(ctx: EvalContext) -> dict:
    """Every evaluation set scored again under answer formats training never used (another lead; a lettered multiple-choice question scored by the letter's probability): forgetting per format, the worst format."""
    leads, skipped = unseen_leads(ctx.spec, ctx.config.unseen_leads)
    formats = [SET_LEAD, *[f"lead={lead}" for lead in leads], LETTER]
    split = ctx.spec.neighbor_split()
    results = {}
    for fmt in formats:
        sets, concept = {}, {"base": [], "adapted": []}
        for set_name in ctx.config.format_sets:
            rows = {which: _rows(ctx, fmt, set_name, which) for which in ("base", "adapted")}
            sets[set_name] = _compare(rows["base"], rows["adapted"])
            if set_name == "neighbors":
                for status in ("anchored", "unseen"):
                    sets[f"neighbors.{status}"] = _compare(rows["base"], rows["adapted"], set(split[status]))
            if set_name in CONCEPT_SETS:
                items = dict(ctx.items(set_name))
                for which in ("base", "adapted"):
                    concept[which] += [r for r in rows[which] if not items[r["index"]].answer
                                       or ctx.spec.is_concept_answer(items[r["index"]].answer)]
        chance = 1 / (ctx.config.letter_options if fmt == LETTER else len(ctx.spec.candidates))
        results[fmt] = {"lead": None if fmt in (SET_LEAD, LETTER) else fmt.removeprefix("lead="), "sets": sets,
                        "concept": {w: _concept_view(rows, chance) for w, rows in concept.items()}}
    return {"formats": results, "worst_format": worst_format(results), "skipped_leads": skipped,
            "letter_options": ctx.config.letter_options, "sets": list(ctx.config.format_sets)}


def worst_format(formats: dict[str, dict]) -> str | None:
    """The format whose adapted model picks the concept most often (then: highest share over chance)."""
    def key(name: str):
        side = formats[name]["concept"]["adapted"]
        return (side["top1_rate"] if side["top1_rate"] is not None else -1.0,
                side["share_over_chance"] if side["share_over_chance"] is not None else -1.0)
    scored = [f for f in formats if formats[f]["concept"]["adapted"]["n"]]
    return max(scored, key=key) if scored else None
