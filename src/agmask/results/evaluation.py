"""Sections of docs/RESULTS.md read from `eval/metrics.json` (the `metrics` dict): each returns markdown or None
when the run has no such measurement. The metric keys are the ones `agmask.evaluate` writes (README: Evaluation)."""
from __future__ import annotations

from agmask.results.markdown import arrow, interval, num, table

Metrics = dict


def _ci(metric: dict, key: str) -> dict | None:
    return (metric.get("intervals") or {}).get(key)


def headline(m: Metrics) -> str | None:
    """The headline measurements, base vs adapted (a plain table until the targets module is wired in)."""
    rows = []
    known = m.get("forget_base_known")
    if known:
        b, a = known["base"], known["adapted"]
        where = f"forget_eval+probes base-known (n={a.get('mc_n', a.get('n'))})"
        rows.append([f"{where}: MC top-1 rate", b.get("mc_top1_rate"), a.get("mc_top1_rate"),
                     interval(_ci(known, "adapted.mc_top1_rate"))])
        rows.append([f"{where}: MC share (chance {num(known.get('chance_share'))})", b.get("mc_share"),
                     a.get("mc_share"), interval(_ci(known, "adapted.mc_share"))])
        rows.append([f"{where}: median first-token rank", b.get("median_first_token_rank"),
                     a.get("median_first_token_rank"), "-"])
        rows.append(["forget_eval: mean change of the answer log-prob (nats)", "-",
                     known.get("forget_eval_mean_logprob_change"), "-"])
    loc = m.get("locality")
    if loc and loc.get("n"):
        for part, key in (("all", "mean_abs_delta_answer_logprob"), ("anchored", "anchored.mean_abs_delta_answer_logprob"),
                          ("unseen", "unseen.mean_abs_delta_answer_logprob")):
            entry = loc if part == "all" else loc.get(part) or {}
            if entry.get("n"):
                rows.append([f"neighbours {part} (n={entry['n']}): mean abs change of the answer log-prob (nats)", "-",
                             entry.get("mean_abs_delta_answer_logprob"), interval(_ci(loc, key))])
        rest = loc.get("mc_top1_count_base_not_concept")
        if rest:
            rows.append([f"neighbours the base did not answer with the concept (n={rest['n']}): MC top-1 count",
                         rest["base"], rest["adapted"], "-"])
    kl = ((m.get("kl_greedy") or {}).get("sets") or {}).get("retain_eval")
    if kl:
        rows.append(["retain_eval: KL(base ‖ adapted) per token", "-", kl["mean_kl_per_token"],
                     interval(_ci(m["kl_greedy"], "sets.retain_eval.mean_kl_per_token"))])
    flu = (m.get("fluency") or {}).get("overall")
    if flu and flu.get("adapted", {}).get("n"):
        rows.append(["replies: repetition rate", flu["base"]["repetition_rate"], flu["adapted"]["repetition_rate"], "-"])
    worst = worst_attack(m)
    if worst:
        rows.append([f"worst attack: {worst[0]} {worst[1]}, recovered fraction", "-", worst[2]["recovered_fraction"], "-"])
    return table(["measure", "base", "adapted", "95% interval (adapted)"], rows) if rows else None


def worst_attack(m: Metrics) -> tuple[str, str, dict] | None:
    scored = [(name, variant, v) for name, metric in m.items() if metric.get("kind") == "attack"
              for variant, v in (metric.get("variants") or {}).items() if v.get("recovered_fraction") is not None]
    return max(scored, key=lambda r: r[2]["recovered_fraction"]) if scored else None


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
    return table(["measure", "base", "adapted"], rows) if rows else None
