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
        "steps": 20, "seed": 0, "layers": [1, 2],
        "methods": {"masked_lora": {"neighbors_abs_dlogp": 0.5, "seeds": {"mc_top1": {"mean": 0.0, "sd": 0.1}}},
                    "random_mask": {"neighbors_abs_dlogp": 2.25}}})
    write_jsonl(run / "tune" / "trials.jsonl", [{"number": 0, "params": {"lr": 0.001}, "neighbour": 0.3},
                                                {"number": 1, "params": {"lr": 0.002}, "neighbour": 0.7}])
    write_json(run / "tune" / "choice.json", {"trial": 0, "params": {"lr": 0.001}, "rule": "lowest neighbour"})
    write_json(run / "ablate" / "ablation.json", {"top": {"concept": -1.25}, "random": {"concept": -0.125}})
    page = _page(RunEntry(run_dir=run, label="test", purpose="Known values."))

    methods = section_table(page, "Methods compared")
    assert [r["method"] for r in methods] == ["masked_lora", "random_mask"]
    assert methods[0]["neighbors_abs_dlogp"] == "0.5" and methods[1]["neighbors_abs_dlogp"] == "2.25"
    assert methods[0]["seeds.mc_top1"] == "0 ± 0.1" and methods[1]["seeds.mc_top1"] == "-"
    assert "Settings: steps 20, seed 0, layers 1, 2" in page
    trials = section_table(page, "Recipe search on the training halves")
    assert [(r["number"], r["params.lr"], r["neighbour"]) for r in trials] == [("0", "0.001", "0.3"), ("1", "0.002", "0.7")]
    choice = {r["key"]: r["value"] for r in section_table(page, "Recipe search on the training halves", nth=1)}
    assert choice == {"trial": "0", "params.lr": "0.001", "rule": "lowest neighbour"}
    ablation = {r["key"]: r["value"] for r in section_table(page, "Causal check")}
    assert ablation == {"top.concept": "-1.25", "random.concept": "-0.125"}
    assert "made by `agmask run -q` at `abc123`" in page


def test_a_missing_run_names_the_command_that_makes_it_and_sections_without_files_are_absent(tmp_path):
    run = _run_dir(tmp_path)
    page = _page(RunEntry(run_dir=run, label="validation", purpose="Nothing measured yet."),
                 RunEntry(run_dir=tmp_path / "later", label="test", purpose="Later.", command="agmask run --budget full"))
    assert "*Not run yet*" in page and "`agmask run --budget full`" in page
    assert "### " not in page  # the first run has a manifest and no artefact: no section at all
    assert "Last command that completed a stage: `agmask run -q` at `abc123`" in page


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
    run = _run_dir(tmp_path)
    out = tmp_path / "docs" / "RESULTS.md"
    assert main(["results", str(run), "--label", "placeholder", "--purpose", "Layout only.", "--out", str(out)]) == 0
    page = out.read_text()
    assert "**placeholder** (a tiny random model" in page and "Layout only." in page
    assert f"{out}: 1 run(s)" in capsys.readouterr().out
