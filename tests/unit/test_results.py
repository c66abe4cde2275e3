"""`agmask results` on run directories written by hand: the optional stages' files, incremental runs, the list's
errors, and the markdown helpers' known answers. (A real tiny run: tests/integration/test_results_tiny.py.)"""
from __future__ import annotations

import pytest

from agmask.cli.main import main
from agmask.files import write_json, write_jsonl
from agmask.results import load_results_spec, render_results
from agmask.results.markdown import flatten, interval, num, table
from agmask.results.spec import ResultsSpec, RunEntry
from agmask.errors import AgmaskError
from resultskit import section_table


def _run_dir(tmp_path, name="run", **manifest):
    run = tmp_path / name
    run.mkdir()
    write_json(run / "manifest.json", {"model": {"spec": "tiny:llama"}, "concept": {"name": "tinyfilm", "source": "x"},
                                       "budget": "demo", "seed": 0, "command": "agmask run -q", "commit": "abc123",
                                       **manifest})
    return run


def _page(*entries) -> str:
    return render_results(ResultsSpec(runs=list(entries)), "listed in a test")


def test_num_shows_what_a_reader_needs():
    assert [num(None), num(True), num(3), num(2.0), num(0.0), num(-70.879123), num(0.00493), num(4e-21), num(67.5)] == \
        ["-", "yes", "3", "2", "0", "-70.879", "0.0049", "4e-21", "67.5"]
    assert interval({"low": 0.1234, "high": 0.5}) == "[0.123, 0.5]" and interval({"low": None}) == "-"


def test_flatten_joins_nested_keys_and_mean_sd_pairs():
    assert flatten({"a": {"b": 1, "c": {"mean": 0.5, "sd": 0.25}}, "d": [1, 2]}) == \
        {"a.b": 1, "a.c": "0.5 ± 0.25", "d": "1, 2"}


def test_a_pipe_inside_a_cell_does_not_break_the_table():
    text = table(["k", "v"], [["a|b", 1.5]])
    assert text.splitlines()[2].count(" | ") == 1 and "a\\|b" in text


def test_compare_tune_and_ablate_files_are_rendered_with_their_values(tmp_path):
    run = _run_dir(tmp_path)
    write_json(run / "compare" / "compare.json", {
        "reference": "saliency", "complete": False, "settings": {"seeds": [0, 1], "steps": 20},
        "variants": {"causal": {"n_seeds": 2, "mean": {"unseen_abs_dlogp": 0.5, "retain_kl": 0.25},
                                "sd": {"unseen_abs_dlogp": 0.125, "retain_kl": 0.0}},
                     "random_same_layers": {"n_seeds": 1, "mean": {"unseen_abs_dlogp": 2.25},
                                            "ci": {"unseen_abs_dlogp": [2.0, 2.5]}}}})
    trials = [{"trial": 0, "options": {"unlearn": {"lr": 0.001}}, "neighbour": 0.3, "per_prompt": list(range(20))},
              {"trial": 1, "options": {"unlearn": {"lr": 0.002}}, "neighbour": 0.7, "per_prompt": list(range(20))}]
    write_jsonl(run / "tune" / "trials.jsonl", trials)
    write_json(run / "tune" / "choice.json", {"options": {"unlearn": {"lr": 0.001}}, "trial": trials[0],
                                              "rule": "lowest neighbour", "meets_every_constraint": True})
    write_json(run / "ablate" / "ablation.json", {
        "ablation": "mean", "units": 100, "mask_units": 256, "ranked_by": "combined", "positions": "prompt",
        "layers": [9, 11], "draws": 5, "top_vs_random": 6.5, "neighbour_vs_concept": {"unseen": 0.25},
        "split_half": {"k": 100, "jaccard": 0.6, "chance": 0.0004},
        "sets": {"forget_eval": {"n": 48, "base_mean_logprob": -3.5, "top": {"mean_change": -1.25},
                                 "random": {"mean_change": -0.125, "sd_change": 0.0625}}}})
    page = _page(RunEntry(run_dir=run, label="test", purpose="Known values."))

    variants = {r["measure"]: r for r in section_table(page, "Methods compared")}
    assert variants["seeds"] == {"measure": "seeds", "causal": "2", "random_same_layers": "1"}
    assert variants["unseen_abs_dlogp"]["causal"] == "0.5 ± 0.125"
    assert variants["unseen_abs_dlogp"]["random_same_layers"] == "2.25 [2, 2.5]"
    assert variants["retain_kl"] == {"measure": "retain_kl", "causal": "0.25 ± 0", "random_same_layers": "-"}
    assert "2 variants × 2 seed(s) [0, 1], 20 steps, reference mask saliency" in page and "**incomplete**" in page
    rows = section_table(page, "Recipe search on the training halves")
    assert [(r["trial"], r["options.unlearn.lr"], r["neighbour"], r["per_prompt"]) for r in rows] == \
        [("0", "0.001", "0.3", "(20 values)"), ("1", "0.002", "0.7", "(20 values)")]
    assert "Chosen: trial 0 (meets every constraint: yes). Rule: lowest neighbour" in page
    assert "today's rule" not in page  # these rows carry no measurements to re-choose from
    chosen = {r["key"]: r["value"] for r in section_table(page, "Recipe search on the training halves", nth=1)}
    assert chosen == {"unlearn.lr": "0.001"}
    effects = section_table(page, "Causal check")
    assert effects == [{"set": "forget_eval", "n": "48", "base answer log-prob": "-3.5", "top units: change": "-1.25",
                        "random: change (mean ± sd)": "-0.125 ± 0.0625"}]
    assert "- top / random on the concept: 6.5" in page and "- unseen neighbours' mean abs change per nat" in page
    assert "- split-half Jaccard of the top 100: 0.6 (chance 0.0004)" in page
    assert "made by `agmask run -q` at `abc123`" in page


def test_a_compare_file_with_one_row_per_method_is_a_table_too(tmp_path):
    run = _run_dir(tmp_path)
    write_json(run / "compare" / "compare.json", {
        "steps": 20, "seed": 0, "layers": [1, 2],
        "methods": {"masked_lora": {"neighbors_abs_dlogp": 0.5}, "random_mask": {"neighbors_abs_dlogp": 2.25}}})
    page = _page(RunEntry(run_dir=run, label="validation", purpose="The older layout."))
    rows = section_table(page, "Methods compared")
    assert [(r["method"], r["neighbors_abs_dlogp"]) for r in rows] == [("masked_lora", "0.5"), ("random_mask", "2.25")]
    assert "Settings: steps 20, seed 0, layers 1, 2" in page


def test_a_missing_run_names_the_command_that_makes_it_and_sections_without_files_are_absent(tmp_path):
    run = _run_dir(tmp_path)
    page = _page(RunEntry(run_dir=run, label="validation", purpose="Nothing measured yet."),
                 RunEntry(run_dir=tmp_path / "later", label="test", purpose="Later.", command="agmask run --budget full"))
    assert "*Not run yet*" in page and "`agmask run --budget full`" in page
    assert "### " not in page  # the first run has a manifest and no artefact: no section at all
    assert "Last command that completed a stage: `agmask run -q` at `abc123`" in page


def test_a_run_whose_first_stage_is_still_running_says_so_not_that_it_predates_recording(tmp_path):
    run = tmp_path / "started"
    run.mkdir()
    write_json(run / "manifest.json", {"model": {"spec": "tiny:llama"}, "concept": {"name": "tinyfilm", "source": "x"}})
    page = _page(RunEntry(run_dir=run, label="validation", purpose="Running."))
    assert "No stage has completed yet" in page and "made before agmask recorded" not in page
    (run / "baseline").mkdir()
    (run / "baseline" / "DONE").write_text("{}")
    assert "made before agmask recorded" in _page(RunEntry(run_dir=run, label="validation", purpose="Old."))


def test_an_incremental_run_shows_each_concept_and_the_regression_table(tmp_path):
    top = _run_dir(tmp_path, "inc", concepts=["a", "b"], runs=["/elsewhere/inc/a", "/elsewhere/inc/b"])
    for name in ("a", "b"):
        sub = _run_dir(top, name)
        write_json(sub / "baseline" / "summary.json", {"forget_eval": {"n": 4, "mean_answer_logprob": -1.5}})
    write_json(top / "regression.json", [{"after": "b", "concept": "a", "forget_eval": {"mean_logprob_change": -3.5},
                                          "neighbors": {"mean_abs_logprob_change": 0.25}}])
    page = _page(RunEntry(run_dir=top, label="test", purpose="Two concepts."))
    assert "### a" in page and "### b" in page and page.count("#### Baseline: what the base model knows") == 2
    row = section_table(page, "Incremental: forgetting of every concept after each")[0]
    assert row["forget_eval log-prob change"] == "-3.5" and row["neighbours mean abs change"] == "0.25"


@pytest.mark.parametrize("text, expected", [
    ("runs:\n  - run_dir: r\n    label: held-out\n    purpose: p\n", "runs[0].label (run r): Input should be"),
    ("runs:\n  - run_dir: r\n    label: test\n    purpose: p\n    colour: red\n", "runs[0].colour (run r): Extra inputs"),
    ("runs:\n  - run_dir: r\n    label: test\n", "runs[0].purpose (run r): Field required"),
    ("runs: []\n", "runs: List should have at least 1 item"),
    ("runs: [\n", "not valid YAML"),
    ("- a\n", "expected a mapping with a `runs` list"),
])
def test_a_bad_list_is_one_line_naming_the_file_and_field(tmp_path, capsys, text, expected):
    spec = tmp_path / "results.yaml"
    spec.write_text(text)
    with pytest.raises(AgmaskError, match="results.yaml"):
        load_results_spec(spec)
    assert main(["results", "--spec", str(spec), "--out", str(tmp_path / "R.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and str(spec) in err
    assert not (tmp_path / "R.md").exists()


def test_a_missing_list_says_how_to_give_runs(tmp_path, capsys):
    assert main(["results", "--spec", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "R.md")]) == 2
    err = capsys.readouterr().err
    assert "none.yaml not found" in err and "agmask results RUN_DIR" in err


def test_run_dirs_on_the_command_line_get_the_given_label(tmp_path, capsys):
    run = _run_dir(tmp_path, recipe={"name": "tune", "trial": 3})
    out = tmp_path / "docs" / "RESULTS.md"
    assert main(["results", str(run), "--label", "placeholder", "--purpose", "Layout only.", "--out", str(out)]) == 0
    page = out.read_text()
    assert "**placeholder** (a tiny random model" in page and "Layout only." in page
    assert "budget `demo`; seed `0`; recipe `tune` (tune trial 3)." in page
    assert f"{out}: 1 run(s)" in capsys.readouterr().out


def test_a_search_chosen_under_an_earlier_rule_says_which_trial_todays_rule_picks(tmp_path):
    from agmask.tuning.rule import RULE

    run = _run_dir(tmp_path)
    base = {"mc_top1": 0.0, "mc_share": 0.0, "chance_share": 0.05, "forget_logprob_change": -20.0,
            "general_abs": 0.1, "neighbour_top1": {"n": 0, "base": 0, "after": 0}, "recommend": None}
    trials = [{"trial": 0, "state": "complete", "start": "defaults",
               "measurements": {**base, "worst_lead_rank": 3000.0, "neighbour_abs": 0.3}},
              {"trial": 1, "state": "complete", "start": "keep the rest",
               "measurements": {**base, "worst_lead_rank": 2000.0, "neighbour_abs": 0.2}}]
    write_jsonl(run / "tune" / "trials.jsonl", trials)
    write_json(run / "tune" / "choice.json", {"options": {}, "trial": trials[0], "rule": "highest rank"})
    page = _page(RunEntry(run_dir=run, label="training", purpose="An old search."))
    assert "today's rule (docs/TUNING.md) picks trial 1 (keep the rest) from the same trials" in page
    write_json(run / "tune" / "choice.json", {"options": {}, "trial": trials[1], "rule": "highest rank once more"})
    assert "today's rule (docs/TUNING.md) picks the same trial." in _page(RunEntry(run_dir=run, label="training",
                                                                                 purpose="Old rule, same pick."))
    write_json(run / "tune" / "choice.json", {"options": {}, "trial": trials[1], "rule": RULE})
    assert "today's rule" not in _page(RunEntry(run_dir=run, label="training", purpose="A current search."))


def test_a_run_directory_not_on_this_machine_keeps_the_tables_the_page_had(tmp_path):
    import shutil

    run = _run_dir(tmp_path)
    write_json(run / "baseline" / "summary.json", {"forget_eval": {"n": 4, "mean_answer_logprob": -1.5}})
    spec, out = tmp_path / "results.yaml", tmp_path / "RESULTS.md"
    spec.write_text(f"runs:\n  - run_dir: {run}\n    label: validation\n    purpose: Made elsewhere.\n"
                    f"  - run_dir: {tmp_path / 'later'}\n    label: test\n    purpose: Later.\n")
    assert main(["results", "--spec", str(spec), "--out", str(out)]) == 0
    first = out.read_text(encoding="utf-8")
    shutil.rmtree(run)
    spec.write_text(spec.read_text().replace("Made elsewhere.", "Made on another machine."))
    assert main(["results", "--spec", str(spec), "--out", str(out)]) == 0
    kept = out.read_text(encoding="utf-8")
    assert kept.count("*Kept from the previous page*") == 1 and "Made on another machine." in kept
    assert kept.count("*Not run yet*") == 1  # the run never rendered is not invented
    tables = lambda page: [line for line in page.split("\n## ", 1)[1].splitlines() if line.startswith("|")]
    assert tables(kept) == tables(first) and "-1.5" in kept
    assert main(["results", "--spec", str(spec), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == kept  # kept again: the note is not repeated


def test_the_recommendation_table_gives_the_base_margin_where_the_top_title_changed():
    from agmask.results.evaluation import recommendations

    pref = {"n": 8, "chance_share": 0.05, "base": {"concept_share": 0.1, "concept_top1": 0, "distinct_top_remaining": 5},
            "adapted": {"concept_share": 0.0, "concept_top1": 0, "distinct_top_remaining": 4},
            "kl_remaining_mean": 0.012, "top_remaining_unchanged": 0.75}
    older = " ".join(recommendations({"recommendation_preference": pref}).split())  # before the margins existed
    assert "| requests whose top title without the concept is unchanged (share) | - | 0.75 |" in older
    assert "margin" not in older
    newer = " ".join(recommendations({"recommendation_preference": {**pref, "changed_base_margins": [0.0089, 0.0617]}})
                     .split())
    assert "| where it changed: the base's margin of its top title over the new one | - | 0.01, 0.06 |" in newer
