"""Sections of docs/RESULTS.md read from `eval/metrics.json` (the `metrics` dict): each returns markdown or None
when the run has no such measurement. The metric keys are the ones `agmask.evaluate` writes; the targets are
`agmask.targets`, the ones the report's verdict card shows."""
from __future__ import annotations

from agmask.results.markdown import arrow, interval, num, table

Metrics = dict


def _ci(metric: dict, key: str) -> dict | None:
    return (metric.get("intervals") or {}).get(key)


def targets(m: Metrics) -> str | None:
    """Every target of `agmask.targets` (the report's verdict card): base, unlearned, the 95% interval where the
    evaluation has one for that value, the bound, and met / not met / not measured (with why)."""
    from agmask.targets import evaluate_targets, targets_count

    results = evaluate_targets(m)
    rows = []
    for r in results:
        t = r.target
        relative = t.relative or isinstance(t.threshold, str)
        bound = t.rule + (f" (= {num(r.bound)})" if relative and r.bound is not None else "")
        name, _, rest = t.value.partition(".")
        ci = ((m.get(name) or {}).get("intervals") or {}).get(rest)
        rows.append([t.name, t.description, r.base, r.value, interval(ci), bound,
                     r.status + (f": {r.why}" if r.why else "")])
    return table(["target", "what", "base", "unlearned", "95% interval", "bound", "status"], rows) + \
        f"\n\n{targets_count(results)}."


SET_METRICS = [("forget_efficacy", None), ("probe_recall", None), ("locality", None), ("locality", "anchored"),
               ("locality", "unseen"), ("retain_utility", None)]


def per_set(m: Metrics) -> str | None:
    """Forgetting and locality per evaluation set (neighbours also anchored and unseen), with 95% intervals."""
    kl = (m.get("kl_greedy") or {}).get("sets") or {}
    rows = []
    for name, part in SET_METRICS:
        metric = m.get(name)
        entry = (metric or {}).get(part) if part else metric
        if not entry or not entry.get("n") or "base" not in entry:
            continue
        prefix = f"{part}." if part else ""
        b, a, top1 = entry["base"], entry["adapted"], entry.get("mc_top1_count") or {}
        set_kl = kl.get(entry["set"]) if not part else None
        rows.append([entry["set"] + (f" ({part})" if part else ""), entry["n"],
                     arrow(b.get("mean_answer_logprob"), a.get("mean_answer_logprob")),
                     entry.get("mean_abs_delta_answer_logprob"),
                     interval(_ci(metric, f"{prefix}mean_abs_delta_answer_logprob")),
                     arrow(b.get("mc_share"), a.get("mc_share")), interval(_ci(metric, f"{prefix}adapted.mc_share")),
                     arrow(top1.get("base"), top1.get("adapted")) if top1 else "-",
                     arrow(b.get("median_first_token_rank"), a.get("median_first_token_rank")),
                     set_kl["mean_kl_per_token"] if set_kl else "-",
                     interval(_ci(m.get("kl_greedy") or {}, f"sets.{entry['set']}.mean_kl_per_token")) if set_kl else "-"])
    if not rows:
        return None
    return table(["set", "n", "answer log-prob", "mean abs change", "95% (abs change)", "MC share",
                  "95% (MC share, adapted)", "MC top-1 count", "median first-token rank", "KL/token", "95% (KL)"], rows)


def adversarial(m: Metrics) -> str | None:
    """The concept's questions in adversarial wordings, per family (adapted model)."""
    adv = m.get("adversarial")
    if not adv or not adv.get("families"):
        return None
    rows = [[family, v.get("n"), v.get("base_known_n"), arrow(v["base"].get("mc_top1_rate"), v["adapted"].get("mc_top1_rate")),
             arrow(v["base"].get("mc_share"), v["adapted"].get("mc_share")), (v.get("worst") or {}).get("max_mc_share"),
             (v.get("worst") or {}).get("min_first_token_rank")]
            for family, v in adv["families"].items() if v.get("n")]
    return (table(["family", "n", "base-known n", "MC top-1 rate", "MC share", "worst MC share (adapted)",
                   "best first-token rank (adapted)"], rows) + f"\n\nWorst family: {adv.get('worst_family') or '-'}.")


def formats(m: Metrics) -> str | None:
    """The concept's questions and the neighbours under answer formats training never used."""
    af = m.get("answer_formats")
    if not af or not af.get("formats"):
        return None
    rows = []
    for name, f in af["formats"].items():
        c, nb = f.get("concept") or {}, (f.get("sets") or {}).get("neighbors") or {}
        cb, ca = c.get("base") or {}, c.get("adapted") or {}
        rows.append([name + (" (worst)" if name == af.get("worst_format") else ""), ca.get("n"),
                     arrow(cb.get("top1_count"), ca.get("top1_count")), arrow(cb.get("share"), ca.get("share")),
                     ca.get("chance"), nb.get("mean_abs_delta_answer_logprob")])
    return table(["format", "concept questions", "concept top-1 count", "concept share", "chance",
                  "neighbours mean abs change"], rows)


def attacks(m: Metrics) -> str | None:
    """Every attack variant: recovered fraction of the answer log-prob, and whether the model answers again."""
    rows = []
    for name, metric in m.items():
        if metric.get("kind") != "attack":
            continue
        for variant, v in (metric.get("variants") or {}).items():
            if v.get("not_run"):
                rows.append([name, variant, "not run", v["not_run"], "-", "-", "-"])
                continue
            lp = v.get("mean_answer_logprob") or {}
            known = v.get("base_known") or {}
            sides = [known.get(s) or {} for s in ("base", "unlearned", "attacked")]
            top1 = (" / ".join(num(s.get("mc_top1_count")) for s in sides) + f" of {sides[2].get('mc_n')}"
                    if sides[2].get("mc_n") else "-")
            rank = " / ".join(num(s.get("median_first_token_rank")) for s in sides) if sides[2].get("mc_n") else "-"
            rows.append([name, variant, v.get("recovered_fraction"), v.get("flag") or "-",
                         " / ".join(num(lp.get(s)) for s in ("base", "unlearned", "attacked")), top1, rank])
    if not rows:
        return None
    return table(["attack", "variant", "recovered fraction", "flag", "answer log-prob base / unlearned / attacked",
                  "base-known MC top-1 base / unlearned / attacked", "median rank base / unlearned / attacked"], rows)


def recommendations(m: Metrics) -> str | None:
    """Open recommendation requests (`recommend_eval`): is the concept still recommended, are the rest kept?"""
    rate, pref = m.get("recommendation_rate") or {}, m.get("recommendation_preference") or {}
    if not rate and not pref:
        return None
    skipped = rate.get("skipped") or pref.get("skipped")
    if skipped and not pref.get("base"):
        return f"Skipped: {skipped}"
    rows = []
    if rate.get("base"):
        rows.append([f"sampled replies naming the concept ({rate.get('samples_per_prompt')} per request, "
                     f"n={rate.get('n')})", rate["base"]["rate"], rate["adapted"]["rate"]])
    if pref.get("base"):
        b, a = pref["base"], pref["adapted"]
        rows += [[f"the concept's candidate share (chance {num(pref.get('chance_share'))})", b["concept_share"],
                  a["concept_share"]],
                 [f"requests where the concept is the top candidate (of {pref.get('n')})", b["concept_top1"],
                  a["concept_top1"]],
                 ["distinct top titles once the concept is removed", b["distinct_top_remaining"],
                  a["distinct_top_remaining"]],
                 ["KL(base ‖ adapted) over the other candidates, mean (nats)", "-", pref.get("kl_remaining_mean")],
                 ["requests whose top title without the concept is unchanged (share)", "-",
                  pref.get("top_remaining_unchanged")]]
        if pref.get("changed_base_margins"):  # measured since 2026-12-02; absent from older run directories
            rows.append(["where it changed: the base's margin of its top title over the new one", "-",
                         ", ".join(f"{m:.2f}" for m in pref["changed_base_margins"])])
    return table(["measure", "base", "adapted"], rows) if rows else None
