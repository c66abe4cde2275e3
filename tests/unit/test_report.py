"""The report: built from a handmade run directory without any model; every figure inline; CLI; summary."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from agmask.cli.main import main
from agmask.cli.summary import eval_summary
from agmask.files import write_json
from agmask.report import build_report
from agmask.report.headline import headline_lines
from reportkit import handmade_metrics, make_run_dir


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    import agmask.models

    monkeypatch.setattr(agmask.models, "load", lambda *a, **k: pytest.fail("the report loaded a model"))
    return make_run_dir(tmp_path / "run")


def test_report_has_every_png_inline_and_no_external_assets(run_dir):
    page = build_report(run_dir).read_text(encoding="utf-8")
    pngs = sorted(run_dir.rglob("*.png"))
    assert len(pngs) == 8
    for p in pngs:  # every figure, byte for byte, as a data URI
        assert base64.b64encode(p.read_bytes()).decode() in page, p
        assert str(p.relative_to(run_dir)) in page  # its caption
    assert page.count("<img ") == len(pngs)
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(s.startswith(("data:image/png;base64,", "#")) for s in srcs)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for title in ("Phase 1", "Phase 2", "Phase 4", "Phase 5", "Phase 6"):
        assert title in page
    assert "Phase 3" not in page  # no similarity/ artefacts
    assert "Wich film &lt;has&gt; a top?" in page  # generations shown, escaped
    assert "masked_lora" in page and "forget.mc_share" in page  # method comparison
    assert "final_loss" in page and "sensitivity.1" in page  # small JSON summaries as tables
    assert "attack_quantization" in page and "int4" in page
    assert "neighbors (unseen)" in page and "neighbors (anchored)" in page  # locality twice
    assert "Answer formats training never used" in page and "<b>letter</b>" in page
    assert "95% intervals" in page and "unseen.mean_abs_delta_answer_logprob" in page
    assert "relearn k=10" in page and "MC top-1 (base-known): base" in page
    assert "lm-evaluation-harness" in page and "arc_easy" in page
    for line in headline_lines(handmade_metrics()):
        assert line.split(":")[0] in page


def test_fisher_figures_go_to_phase_4_only(run_dir):
    page = build_report(run_dir).read_text(encoding="utf-8")
    phase2 = page[page.index('<section id="attribution"'): page.index('<section id="fisher"')]
    assert "saliency_heatmap.png" in phase2 and "fisher_heatmap.png" not in phase2


def test_a_run_dir_with_only_a_manifest_still_builds(tmp_path):
    write_json(tmp_path / "manifest.json", {"model": {"spec": "m"}, "concept": {"name": "c"}})
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "Phase" not in page and "<img" not in page


def test_headline_five_lines_and_worst_attack():
    lines = headline_lines(handmade_metrics(0.3))
    assert [line.split(":")[0] for line in lines] == ["forget", "locality", "utility", "fluency", "worst attack"]
    assert "MC share 0.60 -> 0.05" in lines[0] and "worst adversarial family role_play" in lines[0]
    assert "0.30 [0.10, 0.50]" in lines[1]  # mean |change| of the neighbours' answer log-prob, with its interval
    assert "anchored (n=4) 0.10" in lines[1] and "unseen (n=4) 1.74 [1.20, 2.30]" in lines[1]
    assert "worst answer format letter (concept picked 4 -> 3 of 4, share 0.60 -> 0.41, chance 0.25)" in lines[0]
    assert "int4 recovers 0.30" in lines[4]
    undefined = headline_lines(handmade_metrics(None))[4]
    assert "undefined" in undefined and "near_zero_denominator" in undefined
    assert headline_lines({}) == ["forget: not measured", "locality: not measured", "utility: not measured",
                                  "fluency: not measured", "worst attack: no attack measured"]


def test_cli_report_rebuilds_without_model_or_concept(run_dir, capsys):
    assert main(["report", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"report: {run_dir / 'report.html'}"
    assert out[1:] == eval_summary(run_dir) and len(out) == 7  # five lines, then the targets line
    assert (run_dir / "report.html").is_file()


def test_cli_report_on_a_missing_run_dir_is_a_clean_error(tmp_path, capsys):
    assert main(["report", "--run-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_the_worst_attack_line_says_whether_the_model_answers_again():
    line = headline_lines(handmade_metrics(0.1))[4]  # relearning (0.2) beats quantisation (0.1)
    assert line.startswith("worst attack: attack_relearn_full relearn k=10 recovers 0.20")
    assert "on base-known prompts MC top-1 3 -> 0 -> 2 of 4, median rank 1 -> 900 -> 4" in line
