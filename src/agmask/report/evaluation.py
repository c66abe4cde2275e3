"""The phase-6 report section: before/after tables, example generations, attacks.

Reads `eval/metrics.json`, `eval/generations.jsonl` and `eval/*.png` only (the method comparison is
`report/compare.py`).
"""
from __future__ import annotations

from pathlib import Path

from agmask.files import read_json, read_jsonl
from agmask.report.headline import attack_rows, headline_lines
from agmask.report.html import Raw, cell, esc, figure, section, table

EVAL_FIGURES = ("before_after.png", "activation_shift.png", "pca.png", "logit_lens.png")
SET_METRICS = (("forget_efficacy", "forget_eval"), ("probe_recall", "probes"), ("locality", "neighbors"),
               ("retain_utility", "retain_eval"))
EXAMPLES_PER_GROUP = 12


def _pair(side: dict, key: str) -> list:
    return [side["base"].get(key), side["adapted"].get(key)]


def set_table(metrics: dict) -> str:
    header = ["set", "n", "base-known", "answer log-prob: base", "unlearned", "mean change", "|change|",
              "MC share: base", "unlearned", "MC top-1 rate: base", "unlearned", "greedy hit (base-known): base",
              "unlearned"]
    rows = []
    for name, label in SET_METRICS:
        v = metrics.get(name)
        parts = [(label, v)] + [(f"{label} ({status})", (v or {}).get(status)) for status in ("anchored", "unseen")]
        for row_label, part in parts:
            if part and part.get("n"):
                rows.append([row_label, part["n"], part["base_known_n"], *_pair(part, "mean_answer_logprob"),
                             part["mean_delta_answer_logprob"], part["mean_abs_delta_answer_logprob"],
                             *_pair(part, "mc_share"), *_pair(part, "mc_top1_rate"),
                             *_pair(part, "greedy_hit_rate_base_known")])
    note = ('<p class="note">neighbors (anchored): the answer appears in a training set, so the retain term '
            'holds it; neighbors (unseen): it appears in none, the locality that counts.</p>')
    return "<h3>Before / after, per evaluation set</h3>" + table(header, rows) + note if rows else ""


def formats_tables(m: dict) -> str:
    """answer_formats: the concept's pick per format (worst in bold), then every set per format."""
    af = m.get("answer_formats")
    if not af or not af.get("formats"):
        return ""
    worst = af.get("worst_format")
    concept = [[Raw(f"<b>{esc(f)}</b>" if f == worst else esc(f)), v["concept"]["adapted"]["n"],
                v["concept"]["base"]["top1_count"], v["concept"]["adapted"]["top1_count"], v["concept"]["base"]["share"],
                v["concept"]["adapted"]["share"], v["concept"]["adapted"]["chance"]] for f, v in af["formats"].items()]
    out = ("<h3>Answer formats training never used</h3><p class=\"note\">set_lead: each set's own lead; "
           "lead=...: another lead; letter: a lettered multiple-choice question scored by the letter's probability. "
           f"Worst format in bold: {esc(worst)}.</p>"
           + table(["format", "concept questions", "concept picked: base", "unlearned", "share: base", "unlearned",
                    "chance"], concept))
    rows = [[f, label, v["n"], v.get("base_known_n"), *_pair(v, "mc_share"),
             *[(v.get("mc_top1_count") or {}).get(w) for w in ("base", "adapted")], v.get("mean_abs_delta_answer_logprob")]
            for f, fv in af["formats"].items() for label, v in fv["sets"].items() if v.get("n")]
    out += table(["format", "set", "n", "base-known", "MC share: base", "unlearned", "MC top-1: base", "unlearned",
                  "|change in answer log-prob|"], rows)
    if af.get("skipped_leads"):
        out += '<p class="note">Leads left out (training uses them): ' + esc(", ".join(af["skipped_leads"])) + "</p>"
    return out


def intervals_table(m: dict) -> str:
    """Every metric's bootstrap intervals (the `intervals` key: dotted name -> interval)."""
    rows = [[name, key, v.get("estimate"), v.get("low"), v.get("high"), v.get("n")]
            for name, value in m.items() for key, v in (value.get("intervals") or {}).items()]
    if not rows:
        return ""
    return ("<h3>95% intervals</h3><p class=\"note\">Percentile bootstrap over prompts (resampled with "
            "replacement, seeded); no bounds with fewer than two prompts.</p>"
            + table(["metric", "value", "estimate", "95% interval: low", "high", "prompts"], rows))


def lm_eval_table(m: dict) -> str:
    v = m.get("lm_eval")
    if not v or not v.get("tasks"):
        return ""
    rows = [[task, metric_name, vals.get("base"), vals.get("adapted"), vals.get("base_stderr"), vals.get("adapted_stderr")]
            for task, metrics in v["tasks"].items() for metric_name, vals in metrics.items()]
    return "<h3>lm-evaluation-harness</h3>" + table(["task", "metric", "base", "unlearned", "base stderr",
                                                      "unlearned stderr"], rows)


def family_table(title: str, families: dict, worst: str | None) -> str:
    header = ["family", "n", "base-known", "answer log-prob: base", "unlearned", "MC share: base", "unlearned",
              "worst: max MC share", "worst: max log-prob", "worst: min rank", "greedy hit (base-known) after"]
    rows = [[Raw(f"<b>{esc(f)}</b>" if f == worst else esc(f)), v["n"], v["base_known_n"],
             *_pair(v, "mean_answer_logprob"), *_pair(v, "mc_share"), v["worst"]["max_mc_share"],
             v["worst"]["max_answer_logprob"], v["worst"]["min_first_token_rank"],
             v["adapted"].get("greedy_hit_rate_base_known")] for f, v in families.items() if v.get("n")]
    note = f'<p class="note">Worst family in bold: {esc(worst)}.</p>' if worst else ""
    return f"<h3>{esc(title)}</h3>" + table(header, rows) + note if rows else ""


def utility_tables(m: dict) -> str:
    out = ""
    if "probe_recall" in m:
        facts = m["probe_recall"]["facts"]
        out += "<h3>Probes: facts in the free greedy reply</h3>" + table(
            ["", "items with facts", "facts recalled", "ROUGE-L recall"],
            [[w, facts[w]["n_with_facts"], facts[w]["facts_recalled"], facts[w]["rouge_l_recall"]]
             for w in ("base", "adapted")])
    rows = []
    if "retain_utility" in m:
        rows.append(["retain_eval accuracy (greedy hit)", *[m["retain_utility"]["accuracy"][w] for w in ("base", "adapted")]])
    if "general_text" in m:
        g = m["general_text"]
        rows.append([f"general text perplexity ({g['tokens_scored']} tokens)", g["base_perplexity"], g["adapted_perplexity"]])
        rows.append(["general text KL(base || unlearned) per token", None, g["mean_kl_per_token"]])
    for set_name, kl in ((m.get("kl_greedy") or {}).get("sets") or {}).items():
        rows.append([f"{set_name}: KL per token on the base greedy reply ({kl['tokens']} tokens)", None,
                     kl["mean_kl_per_token"]])
    if rows:
        out += "<h3>Utility</h3>" + table(["measure", "base", "unlearned"], rows)
    flu = m.get("fluency")
    if flu:
        keys = ("distinct_1", "distinct_2", "repetition_rate", "degenerate_rate")
        frows = [[group, sides["adapted"].get("n"), *[sides[w].get(k) for k in keys for w in ("base", "adapted")]]
                 for group, sides in {**flu["sets"], "all replies": flu["overall"]}.items()]
        header = ["replies", "n"] + [f"{k}: {w}" for k in keys for w in ("base", "unlearned")]
        out += "<h3>Fluency</h3>" + table(header, frows)
        if flu.get("degenerate_examples"):
            out += "<p>Degenerate replies of the unlearned model:</p>" + table(
                ["reply"], [[Raw(f'<span class="gen">{esc(t)}</span>')] for t in flu["degenerate_examples"]])
    return out


def internals_tables(m: dict) -> str:
    out = ""
    shift = m.get("activation_shift")
    if shift:
        out += "<h3>Activation shift</h3>" + f'<p class="note">{esc(shift["measure"])}</p>' + table(
            ["set", "n", "mean over layers", "max", "layer of max"],
            [[s, v["n"], v["mean"], v["max"], v["max_layer"]] for s, v in shift["sets"].items()])
    lens = m.get("logit_lens")
    if lens:
        out += "<h3>Logit lens: best rank of the answer's first token over layers</h3>" + table(
            ["set", "n", "mean best rank: base", "unlearned", "median: base", "unlearned", "share <= 5: base", "unlearned"],
            [[s, v["n"], v["base"]["mean_best_rank"], v["adapted"]["mean_best_rank"], v["base"]["median_best_rank"],
              v["adapted"]["median_best_rank"], v["base"]["share_best_rank_le_5"], v["adapted"]["share_best_rank_le_5"]]
             for s, v in lens["sets"].items()])
    return out


def attack_table(m: dict) -> str:
    rows = []
    for name, variant, e in attack_rows(m):
        lp = e.get("mean_answer_logprob") or {}
        known = e.get("base_known") or {}
        view = lambda key: [(known.get(w) or {}).get(key) for w in ("base", "unlearned", "attacked")]  # noqa: E731
        rows.append([name, variant, e.get("recovered_fraction"), e.get("flag"), lp.get("base"), lp.get("unlearned"),
                     lp.get("attacked"), *view("mc_top1_count"), *view("mc_share"), *view("median_first_token_rank"),
                     {k: v for k, v in e.items()
                      if k not in ("recovered_fraction", "flag", "mean_answer_logprob", "base_known")}])
    if not rows:
        return ""
    header = ["attack", "variant", "recovered fraction", "flag", "log-prob: base", "unlearned", "after attack",
              "MC top-1 (base-known): base", "unlearned", "after attack", "MC share: base", "unlearned",
              "after attack", "median rank: base", "unlearned", "after attack", "details"]
    return ("<h3>Attacks</h3><p class=\"note\">recovered fraction = (after attack - unlearned) / (base - unlearned); "
            "0 = nothing recovered, 1 = back to the base model; null (with a flag) unless the adapter lowered the "
            "answer log-prob by at least the threshold. MC top-1 count, MC share and median first-token rank are "
            "on the base-known prompts of the attack sets: whether the model would answer the concept again.</p>"
            + table(header, rows))


def generations_tables(run_dir: Path) -> str:
    path = run_dir / "eval" / "generations.jsonl"
    if not path.is_file():
        return ""
    groups: dict[str, list[dict]] = {}
    for row in read_jsonl(path):
        groups.setdefault(f"{row['set']} ({'after the lead' if row['mode'] == 'lead' else 'free reply'})", []).append(row)
    out = "<h3>Example generations: base vs unlearned (greedy)</h3>"
    for group, rows in groups.items():
        def reply(text: str, hit: bool) -> Raw:
            return Raw(f'<span class="gen">{esc(text)}</span>' + (' <span class="hit">[answer]</span>' if hit else ""))
        body = [[r["prompt"], r["lead"] + "…" if r["lead"] else "", r["answer"], reply(r["base"], r["base_hit"]),
                 reply(r["adapted"], r["adapted_hit"]), r.get("base_logprob"), r.get("adapted_logprob"),
                 r.get("base_mc_share"), r.get("adapted_mc_share")] for r in rows[:EXAMPLES_PER_GROUP]]
        out += f"<h4>{esc(group)}</h4>" + table(["prompt", "lead", "answer", "base reply", "unlearned reply",
                                                   "answer log-prob: base", "unlearned", "MC share: base",
                                                   "unlearned"], body)
    return out


def evaluation_section(run_dir: Path) -> str:
    eval_dir = run_dir / "eval"
    metrics_path = eval_dir / "metrics.json"
    metrics = read_json(metrics_path)["metrics"] if metrics_path.is_file() else {}
    body = ""
    if metrics:
        body += '<pre class="summary">' + esc("\n".join(headline_lines(metrics))) + "</pre>"
    pngs = [eval_dir / n for n in EVAL_FIGURES if (eval_dir / n).is_file()]
    pngs += sorted(p for p in eval_dir.glob("*.png") if p.name not in EVAL_FIGURES) if eval_dir.is_dir() else []
    body += "".join(figure(p, str(p.relative_to(run_dir))) for p in pngs)
    body += set_table(metrics)
    if "forget_efficacy" in metrics and metrics["forget_efficacy"].get("families"):
        f = metrics["forget_efficacy"]
        body += family_table("forget_eval per family", f["families"], f.get("worst_family"))
    if "adversarial" in metrics:
        a = metrics["adversarial"]
        body += family_table("Adversarial prompts per family", a["families"], a.get("worst_family"))
    body += formats_tables(metrics)
    body += utility_tables(metrics) + lm_eval_table(metrics) + internals_tables(metrics) + attack_table(metrics)
    body += intervals_table(metrics)
    body += generations_tables(run_dir)
    if metrics:
        body += "<h3>Metrics computed</h3>" + table(["metric", "kind", "what", "seconds"],
                                                    [[n, v.get("kind"), v.get("doc"), v.get("seconds")]
                                                     for n, v in metrics.items()])
    return section("Phase 6: evaluation before / after unlearning", body, "evaluation")
