"""The evaluation (phase 6) section: figures, then the tables every metric declares, then folded replies.

Reads `eval/metrics.json`, `eval/generations.jsonl` and `eval/*.png` only. The tables come from the
metrics' own declarations (`report=` in `agmask.evaluate.registry`), in registry order; tables of the
same title and header from several metrics are one table. A metric that was skipped leaves a
"Not measured" note with its reason.
"""
from __future__ import annotations

from pathlib import Path

from agmask.evaluate.tables import Reply, Table
from agmask.files import read_json, read_jsonl
from agmask.report.parts import Body, Fold, figures

EVAL_FIGURES = ("before_after.png", "activation_shift.png", "pca.png", "logit_lens.png")
EXAMPLES_PER_GROUP = 12


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / "eval" / "metrics.json"
    return read_json(path)["metrics"] if path.is_file() else {}


def declared_tables(metrics: dict, section: str) -> tuple[list[Table], list[str]]:
    """(the tables the metrics of `section` declare, merged by title and header; one note per skipped metric)."""
    from agmask.evaluate import METRICS

    merged: dict[tuple, Table] = {}
    notes = []
    for name, declared in METRICS.items():
        value = metrics.get(name)
        if value is None or declared.section != section:
            continue
        if value.get("skipped"):
            notes.append(f"Not measured: {value['skipped']}.")
            continue
        for t in declared.report(value) if declared.report else []:
            old = merged.get((t.title, t.header))
            if old is not None:
                note = old.note if t.note in ("", old.note) else f"{old.note} {t.note}".strip()
                t = Table(old.title, old.header, old.rows + t.rows, note)
            merged[t.title, t.header] = t
    return [t for t in merged.values() if t.rows], list(dict.fromkeys(notes))


def intervals_table(m: dict) -> Table:
    """Every metric's bootstrap intervals (the `intervals` key: dotted name -> interval)."""
    rows = [[name, key, v.get("estimate"), v.get("low"), v.get("high"), v.get("n")]
            for name, value in m.items() for key, v in (value.get("intervals") or {}).items()]
    return Table("95% intervals", ("metric", "value", "estimate", "95% interval: low", "high", "prompts"), rows,
                 "Percentile bootstrap over prompts (resampled with replacement, seeded); no bounds with fewer than "
                 "two prompts.")


def generation_tables(run_dir: Path) -> list[Table]:
    """Greedy replies per set and mode (up to EXAMPLES_PER_GROUP each), base vs unlearned."""
    path = run_dir / "eval" / "generations.jsonl"
    groups: dict[str, list[dict]] = {}
    for row in read_jsonl(path) if path.is_file() else []:
        groups.setdefault(f"{row['set']} ({'after the lead' if row['mode'] == 'lead' else 'free reply'})", []).append(row)
    header = ("prompt", "lead", "answer", "base reply", "unlearned reply", "answer log-prob: base", "unlearned",
              "MC share: base", "unlearned")
    return [Table(group, header, [[r["prompt"], r["lead"] + "…" if r["lead"] else "", r["answer"],
                                   Reply(r["base"], r["base_hit"]), Reply(r["adapted"], r["adapted_hit"]),
                                   r.get("base_logprob"), r.get("adapted_logprob"), r.get("base_mc_share"),
                                   r.get("adapted_mc_share")] for r in rows[:EXAMPLES_PER_GROUP]])
            for group, rows in groups.items()]


def evaluation_body(run_dir: Path, dirs: tuple[str, ...]) -> Body:
    eval_dir = run_dir / "eval"
    metrics = read_metrics(run_dir)
    pngs = [eval_dir / n for n in EVAL_FIGURES if (eval_dir / n).is_file()]
    pngs += sorted(p for p in eval_dir.glob("*.png") if p.name not in EVAL_FIGURES) if eval_dir.is_dir() else []
    tables, notes = declared_tables(metrics, "evaluation")
    folds = []
    replies = generation_tables(run_dir)
    if replies:
        folds.append(Fold("Greedy replies per set: base vs unlearned", replies))
    if metrics:
        folds.append(Fold("Metrics computed", [Table("Metrics computed", ("metric", "kind", "what", "seconds"),
                                                     [[n, v.get("kind"), v.get("doc"), v.get("seconds")]
                                                      for n, v in metrics.items()])]))
    return Body(figures=figures(run_dir, pngs), tables=[*tables, intervals_table(metrics)], notes=notes, folds=folds)
