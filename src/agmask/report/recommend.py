"""The "Recommendations before / after" report section (issue 17) and its one-line summary.

Reads `eval/metrics.json` (`recommendation_rate`, `recommendation_preference`) and the `recommend` block of
`perturb/stability.json` only. Absent or skipped metrics leave a note, never an error.
"""
from __future__ import annotations

from pathlib import Path

from agmask.files import read_json
from agmask.report.headline import fmt
from agmask.report.html import Raw, esc, section, table

ANCHOR = "recommendations"
TITLE = "Recommendations before / after"


def _measured(metrics: dict, name: str) -> dict | None:
    value = metrics.get(name)
    return value if value and not value.get("skipped") else None


def recommend_line(metrics: dict) -> str | None:
    """One summary line (rate, candidate share, preference kept), or None when neither metric was measured."""
    rate, pref = _measured(metrics, "recommendation_rate"), _measured(metrics, "recommendation_preference")
    if not rate and not pref:
        return None
    parts = []
    if rate:
        parts.append(f"sampled replies naming the concept {fmt(rate['base']['rate'])} -> {fmt(rate['adapted']['rate'])} "
                     f"({rate['samples_per_prompt']} per prompt)")
    if pref:
        parts.append(f"candidate share {fmt(pref['base']['concept_share'])} -> {fmt(pref['adapted']['concept_share'])} "
                     f"(chance {fmt(pref['chance_share'])})")
        parts.append(f"without it: KL {fmt(pref['kl_remaining_mean'], '.3f')}, top title kept on "
                     f"{fmt(pref['top_remaining_unchanged'])} of prompts, distinct top titles "
                     f"{pref['base']['distinct_top_remaining']} -> {pref['adapted']['distinct_top_remaining']}")
    n = (pref or rate)["n"]
    return f"recommendations (recommend_eval, n={n}): " + "; ".join(parts)


def _titles(top: list) -> Raw:
    return Raw("<br>".join(f"{esc(t)} ({p:.2f})" for t, p in top))


def summary_table(rate: dict | None, pref: dict | None) -> str:
    rows = []
    if rate:
        rows.append([f"concept named in a sampled reply ({rate['samples_per_prompt']} per prompt, temperature "
                     f"{rate['temperature']})", rate["base"]["rate"], rate["adapted"]["rate"]])
        rows.append(["distinct other candidates named in the samples", rate["base"]["distinct_titles_named"],
                     rate["adapted"]["distinct_titles_named"]])
        rows.append(["distinct other titles written before the closing quote", rate["base"]["distinct_extracted_titles"],
                     rate["adapted"]["distinct_extracted_titles"]])
        rows.append(["most named other candidates", rate["base"]["most_named"], rate["adapted"]["most_named"]])
    if pref:
        rows.append([f"concept's share of the candidate distribution (chance {fmt(pref['chance_share'], '.3f')})",
                     pref["base"]["concept_share"], pref["adapted"]["concept_share"]])
        rows.append([f"prompts where the concept is the top candidate (of {pref['n']})", pref["base"]["concept_top1"],
                     pref["adapted"]["concept_top1"]])
        rows.append(["distinct top titles without the concept", pref["base"]["distinct_top_remaining"],
                     pref["adapted"]["distinct_top_remaining"]])
        rows.append(["KL(base || unlearned) over the other candidates, renormalised: mean (max)", None,
                     f"{fmt(pref['kl_remaining_mean'], '.4f')} ({fmt(pref['kl_remaining_max'], '.4f')})"])
        rows.append(["share of prompts whose top title without the concept is unchanged", None,
                     pref["top_remaining_unchanged"]])
    return table(["measure", "base", "unlearned"], rows)


def per_prompt_table(rate: dict | None, pref: dict | None) -> str:
    rates = {r["index"]: r["rate"] for r in (rate or {}).get("per_prompt", [])}
    rows = []
    for p in (pref or {}).get("per_prompt", []):
        r = rates.get(p["index"], {})
        rows.append([p["prompt"], p["family"], r.get("base"), r.get("adapted"), p["concept_share"]["base"],
                     p["concept_share"]["adapted"], _titles(p["top"]["base"]), _titles(p["top"]["adapted"]),
                     p["top_remaining_unchanged"], p["kl_remaining"]])
    header = ["prompt", "kind", "named: base", "unlearned", "share: base", "unlearned", "top 3 before", "top 3 after",
              "top without concept kept", "KL without concept"]
    return "<h3>Per prompt: top 3 titles before and after</h3>" + table(header, rows) if rows else ""


def perturbation_tables(block: dict | None) -> str:
    if not block or block.get("skipped"):
        return ""
    views = {"greedy": "greedy title", "all": "every generation (greedy + samples)", "mc_top": "top MC candidate"}
    means = block["across_wordings"]
    out = ("<h3>Base model: recommended titles across wordings (perturb)</h3><p class=\"note\">Each request in its "
           "original wording and every generated family; consistency = share of the modal title among a request's "
           "wordings, mean over requests. Figures: perturb/recommend_stability.png, perturb/recommend_heatmap.png.</p>")
    out += table(["answers compared", "consistency", "distinct titles", "entropy (bits)"],
                 [[views[v], means[v]["consistency"], means[v]["distinct"], means[v]["entropy_bits"]] for v in views])
    rows = [[r["prompt"], r["wordings"], *[r[v]["modal"] for v in views], *[r[v]["consistency"] for v in views]]
            for r in block["per_request"].values()]
    return out + table(["request", "wordings", *[f"modal: {v}" for v in views], *[f"consistency: {v}" for v in views]],
                       rows)


def recommend_section(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    metrics_path, perturb_path = run_dir / "eval" / "metrics.json", run_dir / "perturb" / "stability.json"
    metrics = read_json(metrics_path)["metrics"] if metrics_path.is_file() else {}
    block = read_json(perturb_path).get("recommend") if perturb_path.is_file() else None
    rate, pref = _measured(metrics, "recommendation_rate"), _measured(metrics, "recommendation_preference")
    notes = [v["skipped"] for v in (metrics.get("recommendation_rate"), metrics.get("recommendation_preference"), block)
             if v and v.get("skipped")]
    body = ""
    if rate or pref:
        lead = (pref or rate)["lead"]
        body += (f'<p class="note">Open recommendation prompts (recommend_eval), replies after the lead '
                 f'{esc(repr(lead))}: the candidate distribution is the softmax over the concept\'s candidates; '
                 "\"without the concept\" removes it and renormalises the rest.</p>")
        body += f'<pre class="summary">{esc(recommend_line(metrics))}</pre>'
        body += summary_table(rate, pref) + per_prompt_table(rate, pref)
    body += perturbation_tables(block)
    if notes and body:
        body += "".join(f'<p class="note">Not measured: {esc(n)}.</p>' for n in dict.fromkeys(notes))
    elif notes:
        body = f'<p class="note">Not measured: {esc(notes[0])}.</p>'
    return section(TITLE, body, ANCHOR)
