"""Forget-side metrics: the generations artefact, held-out questions, probes, adversarial families."""
from __future__ import annotations

import statistics

from agmask.concepts.schema import ConceptSpec
from agmask.distributed import map_sharded
from agmask.evaluate.adversarial import build_adversarial
from agmask.evaluate.context import EVAL_QA_SETS, EvalContext
from agmask.evaluate.registry import metric
from agmask.evaluate.summaries import by_family, compare, family_table, set_table, with_hits, worst_family
from agmask.evaluate.tables import Table, arrow, ci, fmt
from agmask.evaluate.text import facts_recalled, facts_rouge_l
from agmask.files import write_jsonl
from agmask.scoring import BASE_KNOWN_RANK, answer_hit, prefix_for

FREE_SETS = ("probes", "retain_eval")  # free replies (no lead): facts recalled and fluency


def generation_plan(ctx: EvalContext) -> list[tuple[str, str]]:
    return [(s, "lead") for s in EVAL_QA_SETS] + [(s, "free") for s in FREE_SETS]


def adversarial_prompts(ctx: EvalContext) -> tuple[dict[str, list], dict[str, ConceptSpec]]:
    """The adversarial families' prompts, and per family the spec whose forget_eval lead is the family's (a copy:
    the same scoring function scores every family)."""
    fams = build_adversarial(ctx.spec, ctx.config.adversarial_per_family, ctx.config.few_shot)
    specs = {f: ctx.spec.model_copy(update={"lead": {**ctx.spec.lead, "forget_eval": adv[0].lead}})
             for f, adv in fams.items()}
    return fams, specs


def adversarial_requests(ctx: EvalContext) -> list[tuple[str, int]]:
    fams, specs = adversarial_prompts(ctx)
    return [(prefix_for(ctx.tokenizer, specs[f], "forget_eval", a.item()), ctx.config.generation_tokens)
            for f, adv in fams.items() for a in adv]


def adversarial_scores(ctx: EvalContext, which: str) -> list[dict]:
    """Score rows of the adversarial prompts, in family order (a prompt that is a forget_eval question after its
    own lead was scored already: `score_row` memoises by content)."""
    fams, specs = adversarial_prompts(ctx)
    flat = [(f, a) for f, adv in fams.items() for a in adv]
    with ctx.reporter.task(f"adversarial ({which})", len(flat)) as advance:
        def score(part: list) -> list[dict]:
            rows = []
            for f, a in part:
                rows.append(ctx.score_row(which, specs[f], "forget_eval", a.item()))
                advance(1)
            return rows

        return map_sharded(score, flat)  # several processes: split over them, in order


@metric("generations", "artefact")
def generations(ctx: EvalContext) -> dict:
    """Base vs adapted greedy replies for forget_eval, probes, neighbors and retain_eval -> eval/generations.jsonl."""
    rows, counts = [], {}
    plan = [ctx.request(s, it, mode) for s, mode in generation_plan(ctx) for _, it in ctx.items(s)]
    adversarial_too = not ctx.config.metrics or "adversarial" in ctx.config.metrics
    if adversarial_too:
        plan += adversarial_requests(ctx)  # the adversarial metric's replies come from the same batches
    for which in ("base", "adapted"):
        # scored first (one packed forward per prompt, no padding): the replies start from the scored prompts' keys
        for set_name in EVAL_QA_SETS:
            ctx.scores(set_name, which)
        if adversarial_too:
            adversarial_scores(ctx, which)
        ctx.greedy(which, plan)  # one batched generation per model variant
    for set_name, mode in generation_plan(ctx):
        pairs = ctx.items(set_name)
        base, adapted = ctx.generations(set_name, "base", mode), ctx.generations(set_name, "adapted", mode)
        scores = zip(ctx.scores(set_name, "base"), ctx.scores(set_name, "adapted"))
        for (index, item), b, a, (sb, sa) in zip(pairs, base, adapted, scores):
            aliases = ctx.spec.answers_for(item)
            rows.append({"set": set_name, "mode": mode, "index": index, "family": item.family, "prompt": item.prompt,
                         "lead": ctx.spec.lead_for(set_name, item) if mode == "lead" else "", "answer": aliases[0],
                         "facts": item.facts, "base": b, "adapted": a,
                         "base_hit": answer_hit(b, aliases), "adapted_hit": answer_hit(a, aliases),
                         "base_logprob": sb["answer_logprob"], "adapted_logprob": sa["answer_logprob"],
                         "base_mc_share": sb["mc_share"], "adapted_mc_share": sa["mc_share"]})
        counts[f"{set_name}.{mode}"] = len(pairs)
    write_jsonl(ctx.out_dir / "generations.jsonl", rows)
    return {"file": "generations.jsonl", "rows": len(rows), "counts": counts,
            "lead_tokens": ctx.config.generation_tokens, "free_tokens": ctx.config.free_generation_tokens}


def set_comparison(ctx: EvalContext, set_name: str, families: bool = False, keep: set[int] | None = None) -> dict:
    """`compare` of base and adapted on one evaluation set (or the items of `keep`, set indices), with greedy
    hits after the lead."""
    pairs = ctx.items(set_name)
    aliases = [ctx.spec.answers_for(it) for _, it in pairs]
    base = with_hits(ctx.scores(set_name, "base"), ctx.generations(set_name, "base"), aliases)
    adapted = with_hits(ctx.scores(set_name, "adapted"), ctx.generations(set_name, "adapted"), aliases)
    if keep is not None:
        base, adapted = [r for r in base if r["index"] in keep], [r for r in adapted if r["index"] in keep]
        pairs = [(i, it) for i, it in pairs if i in keep]
    known = ctx.base_known(set_name)
    out = {"set": set_name, **compare(base, adapted, known)}
    if families:
        fams = by_family(base, adapted, known, {i: it.family for i, it in pairs})
        out.update(families=fams, worst_family=worst_family(fams))
    return out


def choice_intervals(ctx: EvalContext, sides: dict[str, list[dict]]) -> dict:
    """Bootstrap intervals of the MC share and top-1 rate of each side's rows (`{side}.mc_share`, ...)."""
    out = {}
    for which, rows in sides.items():
        mc = [r for r in rows if r.get("mc_share") is not None]
        out[f"{which}.mc_share"] = ctx.interval([r["mc_share"] for r in mc])
        out[f"{which}.mc_top1_rate"] = ctx.interval([float(r["mc_top1"]) for r in mc])
    return out


def forget_tables(f: dict) -> list[Table]:
    tables = [set_table(f)]
    if f.get("families"):
        tables.append(family_table("forget_eval per family", f["families"], f.get("worst_family")))
    return tables


def forget_headline(f: dict) -> list[tuple[str, str]]:
    if not f.get("n"):
        return []
    top1, intervals = f.get("mc_top1_count"), f.get("intervals") or {}
    parts = [f"forget_eval (n={f['n']}): MC share {arrow(f, 'mc_share')}{ci(intervals.get('adapted.mc_share'))}"]
    if top1:
        parts.append(f"MC top-1 {top1['base']} -> {top1['adapted']} of {f['base']['mc_n']}")
    parts.append(f"answer log-prob {arrow(f, 'mean_answer_logprob')} nats")
    parts.append(f"greedy hit on base-known (n={f['base_known_n']}) {arrow(f, 'greedy_hit_rate_base_known')}")
    return [("forget", p) for p in parts]


@metric("forget_efficacy", "forget", report=forget_tables, headline=forget_headline)
def forget_efficacy(ctx: EvalContext) -> dict:
    """Held-out forget questions: answer log-prob, first-token rank, MC share/top-1, greedy hit (base-known); per family."""
    out = set_comparison(ctx, "forget_eval", families=True)
    sides = {w: ctx.scores("forget_eval", w) for w in ("base", "adapted")}
    return {**out, "intervals": choice_intervals(ctx, sides)}


def _facts_view(ctx: EvalContext, which: str) -> dict:
    pairs = ctx.items("probes")
    gens = ctx.generations("probes", which, "free")
    recalled = [facts_recalled(g, it.facts) for g, (_, it) in zip(gens, pairs)]
    rouge = [facts_rouge_l(g, it.facts) for g, (_, it) in zip(gens, pairs)]
    recalled, rouge = [v for v in recalled if v is not None], [v for v in rouge if v is not None]
    return {"n_with_facts": len(recalled),
            "facts_recalled": statistics.fmean(recalled) if recalled else None,
            "rouge_l_recall": statistics.fmean(rouge) if rouge else None}


def probe_tables(v: dict) -> list[Table]:
    facts = v["facts"]
    return [set_table(v), Table("Probes: facts in the free greedy reply",
                                ("", "items with facts", "facts recalled", "ROUGE-L recall"),
                                [[w, facts[w]["n_with_facts"], facts[w]["facts_recalled"], facts[w]["rouge_l_recall"]]
                                 for w in ("base", "adapted")])]


@metric("probe_recall", "forget", report=probe_tables)
def probe_recall(ctx: EvalContext) -> dict:
    """Direct probes: scores after the lead, and facts recalled + ROUGE-L recall of the free greedy reply."""
    return {**set_comparison(ctx, "probes"),
            "facts": {"base": _facts_view(ctx, "base"), "adapted": _facts_view(ctx, "adapted")}}


def adversarial_headline(a: dict) -> list[tuple[str, str]]:
    worst = a.get("worst_family")
    if not worst:
        return []
    return [("forget", f"worst adversarial family {worst} "
                       f"(max MC share {fmt(a['families'][worst]['worst'].get('max_mc_share'))})")]


def adversarial_tables(a: dict) -> list[Table]:
    return [family_table("Adversarial prompts per family", a["families"], a.get("worst_family"))]


@metric("adversarial", "forget", report=adversarial_tables, headline=adversarial_headline)
def adversarial(ctx: EvalContext) -> dict:
    """Adversarial prompt families built from the spec: mean and worst case per family, base vs adapted."""
    fams, specs = adversarial_prompts(ctx)
    outputs = {w: list(zip(adversarial_scores(ctx, w), ctx.greedy(w, adversarial_requests(ctx))))
               for w in ("base", "adapted")}  # usually made by `generations` already
    results, prompts, lo = {}, {}, 0
    for family, adv in fams.items():
        spec, items = specs[family], [a.item() for a in adv]
        aliases = [spec.answers_for(it) for it in items]
        sides = {}
        for which in ("base", "adapted"):
            part = outputs[which][lo : lo + len(adv)]
            rows = [dict(r, index=i) for i, (r, _) in enumerate(part)]
            sides[which] = with_hits(rows, [g for _, g in part], aliases)
        lo += len(adv)
        known = {r["index"] for r in sides["base"] if r["first_token_rank"] <= BASE_KNOWN_RANK}
        results[family] = compare(sides["base"], sides["adapted"], known)
        prompts[family] = [{"prompt": a.prompt, "lead": a.lead, "base": b["generation"], "adapted": d["generation"]}
                           for a, b, d in zip(adv, sides["base"], sides["adapted"])]
    return {"families": results, "worst_family": worst_family(results), "examples": prompts}


def base_known_tables(v: dict) -> list[Table]:
    keys = ("mc_top1_rate", "mc_share", "median_first_token_rank")
    rows = [[w, v[w]["n"], v[w]["mc_n"], *[v[w][k] for k in keys]] for w in ("base", "adapted")]
    return [Table(f"Base-known prompts of {' + '.join(v['sets'])}", ("model", "prompts", "with MC view",
                  "MC top-1 rate", "MC share", "median first-token rank"),
                  [[("unlearned" if w == "adapted" else w), *rest] for w, *rest in rows],
                  f"Chance share {fmt(v['chance_share'], '.3f')}; mean change of the forget_eval answer log-prob "
                  f"{fmt(v['forget_eval_mean_logprob_change'], '+.2f')} nats (every prompt).")]


@metric("forget_base_known", "forget", report=base_known_tables)
def forget_base_known(ctx: EvalContext) -> dict:
    """The forgetting targets on the base-known prompts of forget_eval + probes: MC top-1 rate and share
    (vs chance), median first-token rank; and the mean answer log-prob change over all of forget_eval."""
    sides, known_rows = {}, {}
    for which in ("base", "adapted"):
        rows = []
        for set_name in ("forget_eval", "probes"):
            known = ctx.base_known(set_name)
            rows += [r for r in ctx.scores(set_name, which) if r["index"] in known]
        known_rows[which] = rows
        mc = [r for r in rows if r["mc_share"] is not None]
        sides[which] = {
            "n": len(rows), "mc_n": len(mc),
            "mc_top1_rate": statistics.fmean(float(r["mc_top1"]) for r in mc) if mc else None,
            "mc_share": statistics.fmean(r["mc_share"] for r in mc) if mc else None,
            "median_first_token_rank": statistics.median(r["first_token_rank"] for r in rows) if rows else None,
        }
    base_all, adapted_all = ctx.scores("forget_eval", "base"), ctx.scores("forget_eval", "adapted")
    return {"sets": ["forget_eval", "probes"], "chance_share": 1 / len(ctx.spec.candidates), **sides,
            "forget_eval_mean_logprob_change": statistics.fmean(
                a["answer_logprob"] - b["answer_logprob"] for a, b in zip(adapted_all, base_all)),
            "intervals": choice_intervals(ctx, known_rows)}
