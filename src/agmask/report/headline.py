"""The summary lines of an evaluation: forget, locality, utility, fluency, worst attack, then any other
line a metric declares (e.g. recommendations).

Pure: reads the `metrics` dict of `eval/metrics.json`. Each metric declares its parts of the lines
(`headline=` in `agmask.evaluate.registry`); the worst-attack line reads every metric of kind "attack".
The CLI and the report both print these lines.
"""
from __future__ import annotations

from agmask.evaluate.tables import fmt

# Always printed, in this order ("not measured" without a part); parts joined by the separator.
LINES = (("forget", ", "), ("locality", "; "), ("utility", "; "), ("fluency", ", "))
OTHER_SEPARATOR = "; "


def metric_parts(metrics: dict) -> dict[str, list[str]]:
    """{line: parts} from every measured metric's headline declaration, in registry order."""
    from agmask.evaluate import METRICS

    parts: dict[str, list[str]] = {}
    for name, declared in METRICS.items():
        value = metrics.get(name)
        if value is None or declared.headline is None or value.get("skipped"):
            continue
        for line, part in declared.headline(value):
            parts.setdefault(line, []).append(part)
    return parts


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
    """The five lines (forget, locality, utility, fluency, worst attack), then the other declared lines."""
    parts = metric_parts(metrics)
    lines = [f"{line}: {sep.join(parts.pop(line))}" if line in parts else f"{line}: not measured"
             for line, sep in LINES]
    lines.append(attack_line(metrics))
    return lines + [f"{line}: {OTHER_SEPARATOR.join(p)}" for line, p in parts.items()]
