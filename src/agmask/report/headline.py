"""The five-line summary of an evaluation (forget, locality, utility, fluency, worst attack).

Pure: reads the `metrics` dict of `eval/metrics.json`; the CLI and the report both print it.
"""
from __future__ import annotations


def fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _arrow(side: dict, key: str, spec: str = ".2f") -> str:
    return f"{fmt(side['base'].get(key), spec)} -> {fmt(side['adapted'].get(key), spec)}"


def ci(interval: dict | None, spec: str = ".2f") -> str:
    """` [low, high]` of a bootstrap interval (intervals.py), or nothing when there is none."""
    if not interval or interval.get("low") is None:
        return ""
    return f" [{fmt(interval['low'], spec)}, {fmt(interval['high'], spec)}]"


def format_part(m: dict) -> str | None:
    """The answer format whose adapted model picks the concept most often (answer_formats)."""
    af = m.get("answer_formats") or {}
    worst = af.get("worst_format")
    if not worst:
        return None
    c = af["formats"][worst]["concept"]
    return (f"worst answer format {worst} (concept picked {c['base']['top1_count']} -> {c['adapted']['top1_count']} "
            f"of {c['adapted']['n']}, share {fmt(c['base']['share'])} -> {fmt(c['adapted']['share'])}, "
            f"chance {fmt(c['adapted']['chance'])})")


def forget_line(m: dict) -> str:
    f = m.get("forget_efficacy")
    if not f or not f.get("n"):
        return "forget: not measured"
    top1 = f.get("mc_top1_count")
    intervals = f.get("intervals") or {}
    parts = [f"forget_eval (n={f['n']}): MC share {_arrow(f, 'mc_share')}{ci(intervals.get('adapted.mc_share'))}"]
    if top1:
        parts.append(f"MC top-1 {top1['base']} -> {top1['adapted']} of {f['base']['mc_n']}")
    parts.append(f"answer log-prob {_arrow(f, 'mean_answer_logprob')} nats")
    parts.append(f"greedy hit on base-known (n={f['base_known_n']}) {_arrow(f, 'greedy_hit_rate_base_known')}")
    adv = m.get("adversarial") or {}
    worst = adv.get("worst_family")
    if worst:
        w = adv["families"][worst]["worst"]
        parts.append(f"worst adversarial family {worst} (max MC share {fmt(w.get('max_mc_share'))})")
    fmt_part = format_part(m)
    if fmt_part:
        parts.append(fmt_part)
    return "forget: " + ", ".join(parts)


def locality_line(m: dict) -> str:
    loc = m.get("locality")
    if not loc or not loc.get("n"):
        return "locality: not measured"
    top1 = loc.get("mc_top1_count")
    intervals = loc.get("intervals") or {}
    text = f"locality: neighbors (n={loc['n']}) mean |change in answer log-prob| " \
           f"{fmt(loc['mean_abs_delta_answer_logprob'])}{ci(intervals.get('mean_abs_delta_answer_logprob'))} nats " \
           f"(mean change {fmt(loc['mean_delta_answer_logprob'], '+.2f')})"
    if top1:
        text += f", MC top-1 {top1['base']} -> {top1['adapted']} of {loc['base']['mc_n']}"
    wins, rest = loc.get("mc_top_is_concept"), loc.get("mc_top1_count_base_not_concept")
    if wins and rest:
        text += f" (the concept is the pick {wins['base']} -> {wins['adapted']}; top-1 where the base did not pick it " \
                f"{rest['base']} -> {rest['adapted']} of {rest['n']})"
    parts = [f"{status} (n={loc[status]['n']}) {fmt(loc[status].get('mean_abs_delta_answer_logprob'))}"
             f"{ci(intervals.get(f'{status}.mean_abs_delta_answer_logprob'))}"
             for status in ("anchored", "unseen") if (loc.get(status) or {}).get("n")]
    if parts:  # the answer appears in a training set (anchored) or in none (unseen: the locality that counts)
        text += "; mean |change| " + ", ".join(parts)
    return text


def utility_line(m: dict) -> str:
    parts = []
    ret = m.get("retain_utility")
    if ret and ret.get("n"):
        parts.append(f"retain_eval accuracy {fmt(ret['accuracy']['base'])} -> {fmt(ret['accuracy']['adapted'])}")
    kl = (m.get("kl_greedy") or {}).get("sets", {}).get("retain_eval")
    if kl:
        kl_ci = ((m.get("kl_greedy") or {}).get("intervals") or {}).get("sets.retain_eval.mean_kl_per_token")
        parts.append(f"KL/token {fmt(kl['mean_kl_per_token'], '.4f')}{ci(kl_ci, '.4f')}")
    gen = m.get("general_text")
    if gen:
        parts.append(f"general text perplexity {fmt(gen['base_perplexity'])} -> {fmt(gen['adapted_perplexity'])}, "
                     f"KL/token {fmt(gen['mean_kl_per_token'], '.4f')} ({gen['tokens_scored']} tokens)")
    return "utility: " + ("; ".join(parts) if parts else "not measured")


def fluency_line(m: dict) -> str:
    flu = (m.get("fluency") or {}).get("overall")
    if not flu or not flu.get("adapted", {}).get("n"):
        return "fluency: not measured"
    return (f"fluency: distinct-2 {fmt(flu['base'].get('distinct_2'))} -> {fmt(flu['adapted'].get('distinct_2'))}, "
            f"repetition {fmt(flu['base']['repetition_rate'])} -> {fmt(flu['adapted']['repetition_rate'])}, "
            f"degenerate {fmt(flu['base']['degenerate_rate'])} -> {fmt(flu['adapted']['degenerate_rate'])} "
            f"of {flu['adapted']['n']} replies")


def attack_rows(m: dict) -> list[tuple[str, str, dict]]:
    """(metric, variant, entry) for every attack variant in the metrics."""
    return [(name, variant, entry) for name, value in m.items() if value.get("kind") == "attack"
            for variant, entry in (value.get("variants") or {}).items()]


def attack_line(m: dict) -> str:
    rows = attack_rows(m)
    if not rows:
        return "worst attack: no attack measured"
    scored = [r for r in rows if r[2].get("recovered_fraction") is not None]
    if not scored:
        flags = sorted({r[2].get("flag") or "undefined" for r in rows})
        return f"worst attack: recovered fraction undefined for every attack ({', '.join(flags)}: the adapter " \
               "did not lower the answer log-prob enough to measure recovery)"
    name, variant, entry = max(scored, key=lambda r: r[2]["recovered_fraction"])
    lp = entry["mean_answer_logprob"]
    text = (f"worst attack: {name} {variant} recovers {fmt(entry['recovered_fraction'])} of the answer log-prob "
            f"(base {fmt(lp['base'])}, unlearned {fmt(lp['unlearned'])}, attacked {fmt(lp['attacked'])} nats)")
    known = entry.get("base_known")
    if known and known["attacked"].get("mc_n"):
        text += "; on base-known prompts MC top-1 " + " -> ".join(
            str(known[w]["mc_top1_count"]) for w in ("base", "unlearned", "attacked")) + \
            f" of {known['attacked']['mc_n']}, median rank " + " -> ".join(
            fmt(known[w]["median_first_token_rank"], ".0f") for w in ("base", "unlearned", "attacked"))
    return text


def headline_lines(metrics: dict) -> list[str]:
    return [forget_line(metrics), locality_line(metrics), utility_line(metrics), fluency_line(metrics),
            attack_line(metrics)]
