"""`agmask results` on a real tiny run made with the CLI: every number on the page is the run's own, each table
names the command and commit that made it, and a stale evaluation is left out."""
from __future__ import annotations

import shutil

import pytest

from agmask.cli.main import main
from agmask.files import read_json
from agmask.pipeline import all_stages, read_done
from agmask.provenance import source_commit
from agmask.results.markdown import interval, num
from agmask.targets import evaluate_targets, targets_count
from resultskit import section_table
from runkit import fast_args


@pytest.fixture
def cli_run(finished_tiny_run):
    """The session's finished tiny run, made by `agmask run` (so its DONE markers record that command), and
    that command."""
    return finished_tiny_run.cfg.run_dir, finished_tiny_run.command


def _write_page(tmp_path, run_dir, label="placeholder"):
    spec = tmp_path / "results.yaml"
    spec.write_text(f"runs:\n  - run_dir: {run_dir}\n    label: {label}\n    purpose: The tiny pipeline.\n"
                    f"  - run_dir: {tmp_path / 'full'}\n    label: test\n    purpose: Not made here.\n"
                    "    command: agmask run --budget full\n")
    out = tmp_path / "RESULTS.md"
    assert main(["results", "--spec", str(spec), "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_every_section_of_a_finished_run_with_its_command_and_commit(cli_run, tmp_path):
    run_dir, command = cli_run
    page = _write_page(tmp_path, run_dir)
    headings = ("Targets", "Baseline: what the base model knows", "Rewording stability of the base model",
                "Attribution and mask", "Adapter", "Forgetting and locality per set", "Adversarial wordings",
                "Answer formats", "Attacks", "Recommendations", "Stage timing")
    for heading in headings:
        assert f"\n### {heading}\n" in page, heading
    caption = f"made by `{command}` at `{source_commit()}`"
    assert page.count(caption) == page.count("<sub>From ") == len(headings)  # under every section
    assert "*Not run yet*" in page and "`agmask run --budget full`" in page


def test_the_numbers_are_the_run_directorys_own(cli_run, tmp_path):
    run_dir, _ = cli_run
    page = _write_page(tmp_path, run_dir)
    m = read_json(run_dir / "eval" / "metrics.json")["metrics"]

    rows = {r["set"]: r for r in section_table(page, "Forgetting and locality per set")}
    loc, unseen = m["locality"], m["locality"]["unseen"]
    assert rows["neighbors"]["n"] == str(loc["n"])
    assert rows["neighbors"]["mean abs change"] == num(loc["mean_abs_delta_answer_logprob"])
    assert rows["neighbors"]["95% (abs change)"] == interval(loc["intervals"]["mean_abs_delta_answer_logprob"]) != "-"
    assert rows["neighbors (unseen)"]["mean abs change"] == num(unseen["mean_abs_delta_answer_logprob"])
    fe = m["forget_efficacy"]
    assert rows["forget_eval"]["MC share"] == f"{num(fe['base']['mc_share'])} → {num(fe['adapted']['mc_share'])}"
    assert rows["retain_eval"]["KL/token"] == num(m["kl_greedy"]["sets"]["retain_eval"]["mean_kl_per_token"])

    attacks = section_table(page, "Attacks")
    expected = [(name, variant) for name, metric in m.items() if metric.get("kind") == "attack"
                for variant in metric["variants"]]
    assert [(r["attack"], r["variant"]) for r in attacks] == expected
    relearn = next(r for r in attacks if r["attack"] == "attack_relearn")
    assert relearn["recovered fraction"] == num(next(iter(m["attack_relearn"]["variants"].values()))["recovered_fraction"])

    targets = {r["target"]: r for r in section_table(page, "Targets")}
    results = evaluate_targets(m)
    assert list(targets) == [r.target.name for r in results]
    for r in results:
        row = targets[r.target.name]
        assert (row["base"], row["unlearned"]) == (num(r.base), num(r.value))
        assert row["status"].split(":")[0] == r.status
    unseen_ci = targets["locality.unseen"]["95% interval"]
    assert unseen_ci == interval(loc["intervals"]["unseen.mean_abs_delta_answer_logprob"]) != "-"
    assert f"{targets_count(results)}." in page

    timing = section_table(page, "Stage timing")
    seconds = {s: read_done(run_dir, s)["seconds"] for s in all_stages() if read_done(run_dir, s)}
    assert {r["stage"]: r["seconds"] for r in timing[:-1]} == {s: num(v) for s, v in seconds.items()}
    assert timing[-1]["seconds"] == num(round(sum(seconds.values()), 1))

    baseline = {r["set"]: r for r in section_table(page, "Baseline: what the base model knows")}
    summary = read_json(run_dir / "baseline" / "summary.json")
    assert {s: r["mean answer log-prob"] for s, r in baseline.items()} == \
        {s: num(v["mean_answer_logprob"]) for s, v in summary.items()}


def test_a_stale_evaluation_is_left_out_with_the_reason(cli_run, tmp_path):
    run_dir, _ = cli_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, symlinks=True)
    assert main(["mask", "--run-dir", str(copy), "-q", *fast_args(), "--set", "mask.k=10"]) == 0
    page = _write_page(tmp_path, copy)
    assert "Left out, not current:\n\n- evaluate: stage unlearn reran" in page and "\n- unlearn: stage mask reran" in page
    assert "### Targets" not in page and "### Attacks" not in page
    assert "### Attribution and mask" in page  # the rerun mask is current
    mask_caption = page.split("### Attribution and mask")[1].split("<sub>")[1]
    assert "--set mask.k=10" in mask_caption  # the mask's table names the command that reran it
