"""The "Recommendations before / after" section and summary line: from a real tiny evaluation, from a
hand-made metrics file, and with the metrics skipped or absent."""
from __future__ import annotations

import html

import pytest

from agmask.cli.summary import eval_summary
from agmask.concepts import load_concept
from agmask.evaluate import EvalConfig, evaluate_model
from agmask.files import read_json, write_json
from agmask.report import build_report
from agmask.report.recommend import recommend_line
from evalkit import add_adapter
from reportkit import handmade_metrics, make_run_dir, section_html
from runkit import one_torch_thread

METRICS = ("recommendation_rate", "recommendation_preference")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_concept_path):
    """eval/metrics.json of a random adapter on tiny:llama: both recommendation metrics measured."""
    from agmask.models import load

    run = tmp_path_factory.mktemp("run")
    write_json(run / "manifest.json", {"model": {"spec": "tiny:llama"}, "concept": {"name": "tinyfilm"}})
    spec = load_concept(str(tiny_concept_path)).spec
    model, tok, _ = load("tiny:llama")
    with one_torch_thread():  # set up before the per-test fixture that does it
        evaluate_model(add_adapter(model, [0, 1], std=0.5), tok, spec,
                       EvalConfig(metrics=METRICS, recommend_samples=3, recommend_tokens=6), run / "eval")
    return run, spec


def test_section_lists_every_prompt_with_its_top_titles(evaluated):
    run, spec = evaluated
    metrics = read_json(run / "eval" / "metrics.json")["metrics"]
    page = html.unescape(section_html(build_report(run).read_text(encoding="utf-8"), "recommendations"))
    assert page.startswith('<section id="recommendations"><h2>Recommendations before / after</h2>')
    for item in spec.recommend_eval:
        assert item.prompt in page
    pref = metrics["recommendation_preference"]
    for p in pref["per_prompt"]:
        for side in ("base", "adapted"):
            title, prob = p["top"][side][0]
            assert f"{title} ({prob:.2f})" in page
    assert recommend_line(metrics) in page and "Not measured" not in page


def test_summary_line_and_cli_summary(evaluated):
    run, _ = evaluated
    metrics = read_json(run / "eval" / "metrics.json")["metrics"]
    line = recommend_line(metrics)
    pref, rate = metrics["recommendation_preference"], metrics["recommendation_rate"]
    assert line.startswith(f"recommendations (recommend_eval, n={pref['n']}): sampled replies naming the concept ")
    assert f"candidate share {pref['base']['concept_share']:.2f} -> {pref['adapted']['concept_share']:.2f} (chance 0.20)" in line
    assert f"({rate['samples_per_prompt']} per prompt)" in line
    assert eval_summary(run)[-2] == line and len(eval_summary(run)) == 7  # then the targets line


def test_known_line_from_hand_made_numbers():
    metrics = {"recommendation_rate": {"n": 20, "samples_per_prompt": 8, "base": {"rate": 0.41}, "adapted": {"rate": 0.0}},
               "recommendation_preference": {"n": 20, "chance_share": 0.05, "base": {"concept_share": 0.41,
                                             "distinct_top_remaining": 6}, "adapted": {"concept_share": 0.004,
                                             "distinct_top_remaining": 2}, "kl_remaining_mean": 0.2134,
                                             "top_remaining_unchanged": 0.375}}
    assert recommend_line(metrics) == (
        "recommendations (recommend_eval, n=20): sampled replies naming the concept 0.41 -> 0.00 (8 per prompt); "
        "candidate share 0.41 -> 0.00 (chance 0.05); without it: KL 0.213, top title kept on 0.38 of prompts, "
        "distinct top titles 6 -> 2")
    metrics["recommendation_preference"]["changed_base_margins"] = [0.009, 0.0612]  # two near ties flipped
    assert "top title kept on 0.38 of prompts (where it changed, the base's margin was 0.01, 0.06), distinct" \
        in recommend_line(metrics)
    metrics["recommendation_preference"]["changed_base_margins"] = []  # none changed: nothing to add
    assert "top title kept on 0.38 of prompts, distinct" in recommend_line(metrics)


def test_skipped_metrics_leave_a_note_and_no_line(tmp_path):
    note = "concept tinypark has no recommend_eval set: add open recommendation prompts"
    skipped = {name: {"kind": "forget", "doc": "", "seconds": 0.0, "skipped": note} for name in METRICS}
    write_json(tmp_path / "manifest.json", {"model": {"spec": "tiny:llama"}, "concept": {"name": "tinypark"}})
    assert "recommendations" not in build_report(tmp_path).read_text(encoding="utf-8")  # no artefacts: no section
    write_json(tmp_path / "eval" / "metrics.json", {"metrics": skipped})
    write_json(tmp_path / "perturb" / "stability.json", {"recommend": {"skipped": "concept tinypark has no recommend_eval set"}})
    assert recommend_line(skipped) is None
    section = section_html(build_report(tmp_path).read_text(encoding="utf-8"), "recommendations")
    assert "Not measured: concept tinypark has no recommend_eval set: add" in section and "<table" not in section
    page = build_report(tmp_path).read_text(encoding="utf-8")  # the two targets that need recommend_eval say so
    assert page.count("recommendation_rate skipped: concept tinypark has no recommend_eval set") == 1


def test_report_has_the_section_after_the_evaluation(tmp_path, evaluated):
    run = make_run_dir(tmp_path / "run")
    metrics = {**handmade_metrics(), **read_json(evaluated[0] / "eval" / "metrics.json")["metrics"]}
    write_json(run / "eval" / "metrics.json", {"schema": 1, "input_hash": "h", "metrics": metrics})
    page = build_report(run).read_text(encoding="utf-8")
    assert page.index('id="evaluation"') < page.index('id="recommendations"')
    assert '<a href="#recommendations">Recommendations before / after</a>' in page
