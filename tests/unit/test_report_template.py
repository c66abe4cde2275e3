"""The report page from its template: the verdict card first, example replies, metric-declared tables (a new
metric needs no report edit), JSON folded, optional-stage sections; the CLI summary's targets line."""
from __future__ import annotations

import html
import re

import pytest

from agmask.cli.summary import eval_summary
from agmask.evaluate import METRICS
from agmask.evaluate.registry import Metric
from agmask.evaluate.tables import Table
from agmask.files import read_json, write_json, write_jsonl
from agmask.report import build_report
from agmask.report.examples import example_tables
from agmask.report.parts import Body
from agmask.report.sections import Section, build_sections
from agmask.targets import evaluate_targets, targets_line
from reportkit import handmade_metrics, make_run_dir, png, section_html


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    import agmask.models

    monkeypatch.setattr(agmask.models, "load", lambda *a, **k: pytest.fail("the report loaded a model"))
    return make_run_dir(tmp_path / "run")


def page_of(run) -> str:
    return build_report(run).read_text(encoding="utf-8")


def test_the_verdict_card_leads_with_every_target(run_dir):
    page = page_of(run_dir)
    ids = re.findall(r'<section id="([^"]+)"', page)
    assert ids[:3] == ["verdict", "examples", "evaluation"] and ids.index("training") > ids.index("compare")
    card = section_html(page, "verdict")
    rows = re.findall(r'<tr class="(met|not-met|not-measured)"><td>([^<]+)</td>', card)
    expected = evaluate_targets(handmade_metrics())
    assert rows == [(r.status.replace(" ", "-"), r.target.name) for r in expected]
    assert {s for s, _ in rows} == {"met", "not-met", "not-measured"}  # the hand-made numbers give all three
    unseen = re.search(r'<tr class="not-met"><td>locality.unseen</td>.*?</tr>', card, re.S)[0]
    assert "<td>1.74</td>" in unseen and "&lt;= 0.5" in unseen  # value and threshold; base n/a (a change)
    logprob = re.search(r'<tr class="met"><td>forget.answer_logprob</td>.*?</tr>', card, re.S)[0]
    assert "<td>-6</td>" in logprob and "&lt;= base - 5 (= -6)" in logprob and "<td>-1</td>" in logprob
    assert "relearn k=20 (needs 20 in evaluate.full_relearn_steps)" in html.unescape(card)
    met = sum(r.met for r in expected)
    assert f"targets: {met} met, " in card and "forget: forget_eval (n=4)" in html.unescape(card)
    assert "Adapter trained with" not in card  # the hand-made unlearn/summary.json names no method


def test_the_card_shows_the_method_and_recipe_that_trained_the_adapter(run_dir):
    write_json(run_dir / "unlearn" / "summary.json", {"method": "masked_lora", "steps_run": 40,
                                                      "recipe": {"source": "tune/choice.json", "retain_weight": 8}})
    card = html.unescape(section_html(page_of(run_dir), "verdict"))
    assert "Adapter trained with method masked_lora, steps_run 40, recipe.source tune/choice.json, " \
           "recipe.retain_weight 8 (unlearn/summary.json)." in card
    write_json(run_dir / "unlearn" / "summary.json", {"method": "npo", "recipe": "defaults"})
    assert "Adapter trained with method npo, recipe defaults" in html.unescape(page_of(run_dir))


def test_no_verdict_without_an_evaluation(tmp_path):
    write_json(tmp_path / "manifest.json", {"model": {"spec": "m"}, "concept": {"name": "c"}})
    card = section_html(page_of(tmp_path), "verdict")
    assert "No verdict: the evaluation has not run" in card and "<table" not in card


def test_a_new_metric_needs_no_report_edit(run_dir, monkeypatch):
    """A metric registered with report= and headline= shows its table and its summary part; skipped, a note."""
    def toy_tables(value):
        return [Table("Toy table", ("measure", "value"), [["toy count", value["count"]]], "A toy note.")]

    toy = Metric("toy", "utility", lambda ctx: {}, "a toy", report=toy_tables,
                 headline=lambda value: [("utility", f"toy count {value['count']}")])
    monkeypatch.setitem(METRICS, "toy", toy)
    metrics = {**handmade_metrics(), "toy": {"kind": "utility", "doc": "a toy", "seconds": 0.0, "count": 42}}
    write_json(run_dir / "eval" / "metrics.json", {"schema": 1, "metrics": metrics})
    evaluation = section_html(page_of(run_dir), "evaluation")
    assert re.search(r'<h3>Toy table</h3>\s*<p class="note">A toy note.</p>', evaluation)
    assert "<td>toy count</td><td>42</td>" in evaluation
    assert eval_summary(run_dir)[2].endswith("(511 tokens); toy count 42")  # the utility line
    metrics["toy"] = {"kind": "utility", "doc": "a toy", "seconds": 0.0, "skipped": "no toy data here"}
    write_json(run_dir / "eval" / "metrics.json", {"schema": 1, "metrics": metrics})
    evaluation = section_html(page_of(run_dir), "evaluation")
    assert "Toy table" not in evaluation and "Not measured: no toy data here." in evaluation
    assert "toy count" not in eval_summary(run_dir)[2]


def test_tables_of_several_metrics_merge_in_registry_order(run_dir):
    utility = section_html(page_of(run_dir), "evaluation").split("<h3>Utility</h3>")[1].split("</table>")[0]
    measures = re.findall(r"<tr><td>([^<]+)</td>", utility)
    assert measures == ["retain_eval accuracy (greedy hit)", "retain_eval: KL per token on the base greedy reply (30 tokens)",
                        "general text perplexity (511 tokens)", "general text KL(base || unlearned) per token"]


def test_json_dumps_are_folded_and_every_phase_keeps_its_files(run_dir):
    page = page_of(run_dir)
    folds = re.findall(r"<details>.*?</details>", page, re.S)
    for name in ("layers.json", "summary.json", "manifest.json"):
        assert any(f"<h4>{name}</h4>" in f for f in folds), name
    assert "sensitivity.1" in section_html(page, "attribution") and "final_loss" in section_html(page, "training")
    assert not re.search(r"<h4>[^<]*\.json</h4>", re.sub(r"<details>.*?</details>", "", page, flags=re.S))


def test_examples_pick_base_known_forget_prompts():
    rows = [{"set": "forget_eval", "mode": "lead", "index": i, "family": None, "prompt": f"q{i}", "lead": "L",
             "answer": "Inception", "base": "Inception", "adapted": "Memento", "base_hit": True, "adapted_hit": False}
            for i in range(3)]
    rows += [{**rows[0], "set": "neighbors", "index": i, "family": fam, "prompt": f"n{i}"}
             for i, fam in enumerate(("anchored", "unseen"))]
    forget, neighbours, general = example_tables(rows, {0: 9, 1: 2, 2: 5})  # ranks <= 5: base-known
    assert forget.title == "Forget prompts the base model knows" and [r[0] for r in forget.rows] == ["q1 [L…]", "q2 [L…]"]
    assert [r[0] for r in neighbours.rows] == ["n1 [L…]", "n0 [L…]"] and general.rows == []  # unseen first
    assert example_tables(rows, {})[0].title == "Forget prompts"  # none base-known: the first ones, said so
    assert "not current" in example_tables(rows, None)[0].note


def test_optional_stage_sections_read_their_own_folders(run_dir):
    write_json(run_dir / "tune" / "choice.json", {"trial": 3, "options": {"unlearn.retain_weight": 8}})
    write_jsonl(run_dir / "tune" / "trials.jsonl", [{"trial": i, "forget": 0.1 * i, "locality": {"unseen": 0.3}}
                                                    for i in range(4)])
    png(run_dir / "tune" / "trials.png", "orange")
    tune = section_html(page_of(run_dir), "tune")
    assert "tune/trials.png" in tune and "<td>options.unlearn.retain_weight</td><td>8</td>" in tune
    assert "<details><summary>Trials (tune/trials.jsonl, 4)</summary>" in tune and "locality.unseen" in tune
    compare = section_html(page_of(run_dir), "compare")
    assert "masked_lora" in compare and "forget.mc_share" in compare


def test_a_withheld_folder_never_reaches_its_section(tmp_path):
    seen = []

    def build(run, dirs):
        seen.append(dirs)
        return Body(notes=[f"dirs {dirs}"])

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    sections = (Section("s", "S", ("a", "b", "missing"), build), Section("t", "T", ("b",), build))
    built = build_sections(tmp_path, {"b"}, sections)
    assert [b.anchor for b in built] == ["s"] and seen == [("a",)]


def test_the_cli_summary_ends_with_the_targets_line(run_dir):
    lines = eval_summary(run_dir)
    assert lines[-1] == targets_line(evaluate_targets(read_json(run_dir / "eval" / "metrics.json")["metrics"]))
    assert lines[-1].startswith("targets met ") and "; not met: " in lines[-1] and "; not measured: " in lines[-1]


def test_a_metric_declaration_cannot_misalign_its_rows():
    with pytest.raises(ValueError, match="rows of \\[3\\] cells under 2 columns"):
        Table("t", ("a", "b"), [[1, 2, 3]])
    assert METRICS["locality"].section == "evaluation"
    assert METRICS["recommendation_rate"].section == "recommendations"
