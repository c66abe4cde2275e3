"""Issue 19 on a finished tiny run: a failed stage never destroys results, stale or damaged inputs are caught,
and every bad option or environment problem is one line before anything is written."""
from __future__ import annotations

import pytest

from agmask import pipeline
from agmask.cli.main import main
from agmask.files import read_json
from agmask.session import Session
from runkit import copy_run, fast_args, snapshot


@pytest.fixture
def finished(finished_tiny_run):
    return finished_tiny_run.cfg  # the session's one finished tiny run: copied before any change


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of the finished run (its config)."""
    return copy_run(finished, tmp_path / "copy")


def cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()  # whatever the test's setup printed
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def one_line_error(capsys, *args) -> str:
    code, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def on_run(command: str, run, *extra) -> list:
    """`agmask COMMAND` on the run with the options it was made with (FAST), quiet, plus `extra`."""
    return [command, "--run-dir", run.run_dir, "-q", *fast_args(), *extra]


def test_bad_unlearn_steps_leave_adapter_eval_and_report_byte_identical(run, capsys):
    before = snapshot(run.run_dir)
    for steps in ("-1", "0"):
        line = one_line_error(capsys, *on_run("run", run, "--set", f"unlearn.steps={steps}"))
        assert f"bad option for stage unlearn: steps must be >= 1, got {steps}" in line
    assert snapshot(run.run_dir) == before


def test_a_stage_failing_after_writing_its_adapter_changes_nothing(run, monkeypatch):
    """The unlearn stage dies after save_adapter (here: in its loss figure): the old adapter, eval and report
    stay byte-identical and the old DONE markers stay valid."""
    import agmask.stages.unlearn as unlearn

    before = snapshot(run.run_dir)

    def broken_figure(*args, **kwargs):
        raise IndexError("figure failed")

    monkeypatch.setattr(unlearn, "loss_curves", broken_figure)
    changed = run.model_copy(update={"overrides": {**run.overrides, "unlearn": {"steps": 3, "batch_size": 2}}})
    with pytest.raises(IndexError):
        pipeline.run_pipeline(changed)
    assert (run.run_dir / ".staging" / "unlearn" / "adapters" / "tinyfilm").is_dir()  # it did write one, staged
    assert snapshot(run.run_dir) == before
    session = Session.create(run)
    assert not any(pipeline.run_stage(session, s) for s in pipeline.STAGES)  # still current


def test_a_rerun_stage_marks_its_dependants_stale_and_the_report_leaves_them_out(run, capsys):
    code, err = cli(capsys, *on_run("unlearn", run, "--set", "unlearn.steps=3"))
    assert code == 0, err
    assert pipeline.read_done(run.run_dir, "evaluate") is None
    assert "unlearn reran" in read_json(run.run_dir / "eval" / "STALE")["reason"]
    assert pipeline.read_done(run.run_dir, "report") is None
    code, _ = cli(capsys, "report", "--run-dir", run.run_dir)
    page = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert code == 0 and "Phase 6" not in page and "Left out, not current: evaluate" in page
    assert "No verdict: the evaluation has not run or is not current" in page  # no stale targets either
    assert "Phase 5" in page  # mask and the new unlearn results are current


def test_the_cli_summary_does_not_present_stale_evaluation_results(run, capsys):
    from agmask.cli.summary import eval_summary

    assert len(eval_summary(run.run_dir)) == 7  # five lines + recommendations (the fixture has them) + targets
    assert cli(capsys, *on_run("mask", run, "--set", "mask.k=10"))[0] == 0
    lines = eval_summary(run.run_dir)
    assert len(lines) == 1 and "not current" in lines[0] and "unlearn reran" in lines[0]


def test_evaluate_alone_after_a_concept_edit_refuses_in_one_line(run, capsys):
    concept = run.concepts[0]
    text = open(concept, encoding="utf-8").read()
    open(concept, "w", encoding="utf-8").write(text.replace("forget_eval: 'The movie is \"'",
                                                            "forget_eval: 'The film is \"'"))
    before = snapshot(run.run_dir)
    line = one_line_error(capsys, *on_run("evaluate", run, "--concept", concept))
    assert "stage evaluate needs stage baseline to be current" in line and "the concept file changed" in line
    assert f"agmask baseline --run-dir {run.run_dir}" in line
    assert snapshot(run.run_dir) == before
    code, err = cli(capsys, *on_run("run", run, "--concept", concept))  # run redoes what is needed
    assert code == 0, err


def test_an_upstream_option_change_is_caught_too(run, capsys):
    line = one_line_error(capsys, *on_run("unlearn", run, "--set", "mask.k=10"))
    assert "needs stage mask to be current, but its options changed (k 12 -> 10;" in line


@pytest.mark.parametrize("rel, stage", [("attribute/scores.safetensors", "attribute"),
                                        ("mask/mask.safetensors", "mask"),
                                        ("adapters/tinyfilm/adapter_model.safetensors", "unlearn")])
def test_a_truncated_artefact_is_named_in_one_line(run, capsys, rel, stage):
    path = run.run_dir / rel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot(run.run_dir)
    line = one_line_error(capsys, *on_run("run", run))
    assert f"{rel} does not match the hash recorded" in line and f"agmask {stage} --force" in line
    assert snapshot(run.run_dir) == before


def test_evaluate_force_on_a_damaged_adapter_keeps_the_evaluation(run, capsys):
    path = run.run_dir / "adapters" / "tinyfilm" / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    before = snapshot(run.run_dir)
    line = one_line_error(capsys, *on_run("evaluate", run, "--force"))
    assert "adapters/tinyfilm/adapter_model.safetensors" in line and "rerun stage unlearn" in line
    assert snapshot(run.run_dir) == before and pipeline.read_done(run.run_dir, "evaluate") is not None


def test_a_deleted_adapter_mask_is_caught(run, capsys):
    (run.run_dir / "adapters" / "tinyfilm" / "mask.safetensors").unlink()
    line = one_line_error(capsys, *on_run("evaluate", run, "--force"))
    assert "adapters/tinyfilm/mask.safetensors is missing" in line


@pytest.mark.parametrize("setting, needle", [
    ("nosuchstage.x=1", "unknown stage 'nosuchstage'"),
    ("eval.max_items=3", "unknown stage 'eval' (did you mean evaluate?)"),
    ("unlarn.steps=3", "unknown stage 'unlarn' (did you mean unlearn?)"),
    ("unlearn.stpes=3", "unknown option(s) for stage unlearn: stpes (did you mean steps?)"),
    ("mask.layers=9", "mask: layers must be a list such as [1, 2], got 9"),
    ("mask.layers=[1, 9]", "mask: layers [9] do not exist, tiny:llama has layers 0..2"),
    ("mask.min_depth=1", "mask: min_depth 1 leaves no layer of tiny:llama (layers 0..2)"),
    ("mask.k=-5", "mask: k"),
    ("mask.k=0", "mask: k"),
    ("mask.method=best", "mask: method"),
    ("mask.score=combine", "did you mean combined?"),
    ("unlearn.method=npoo", "did you mean npo?"),
    ("evaluate.kl_sets=[forget_train]", "not evaluation sets"),
    ("evaluate.metrics=[locality, localty]", "unknown metric 'localty' (did you mean locality?)"),
    ("similarity.sets=[neighbours]", "'neighbours' (did you mean neighbors?) is not a set the probe stores"),
    ("evaluate.lm_eval_include_path=/no/such/tasks", "/no/such/tasks is not a directory"),
])
def test_bad_options_fail_before_anything_is_written(capsys, tmp_path, tiny_concept_path, setting, needle):
    run_dir = tmp_path / "new"
    line = one_line_error(capsys, "run", "--model", "tiny:llama", "--concept", tiny_concept_path,
                          "--run-dir", run_dir, "--set", setting)
    assert needle in line
    assert not run_dir.exists()  # no baseline/, not even the manifest


def test_an_option_of_a_stage_that_does_not_run_is_checked_too(capsys, tmp_path, tiny_concept_path):
    line = one_line_error(capsys, "baseline", "--model", "tiny:llama", "--concept", tiny_concept_path,
                          "--run-dir", tmp_path / "r", "--set", "mask.layers=9")
    assert "mask: layers" in line and not (tmp_path / "r").exists()


def test_device_errors_are_one_line_and_touch_nothing(run, capsys):
    import torch

    before = snapshot(run.run_dir)
    assert "unknown device 'tpu'" in one_line_error(capsys, *on_run("run", run, "--device", "tpu"))
    if not torch.cuda.is_available():
        for extra in ([], ["--force"]):
            line = one_line_error(capsys, *on_run("run", run, "--device", "cuda", *extra))
            assert "no CUDA GPU is visible" in line
    assert snapshot(run.run_dir) == before  # manifest not rewritten, no DONE marker deleted


def test_environment_errors_are_one_line(capsys, tmp_path, tiny_concept_path, monkeypatch):
    base = ["run", "--model", "tiny:llama", "--concept", tiny_concept_path]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in one_line_error(capsys, "run", "--model", "tiny:llama", "--concept", latin1,
                                         "--run-dir", tmp_path / "a")
    assert "is a directory; pass a concept YAML file" in one_line_error(
        capsys, "run", "--model", "tiny:llama", "--concept", tmp_path, "--run-dir", tmp_path / "b")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file, not a directory" in one_line_error(capsys, *base, "--run-dir", a_file / "run")
    assert "model path ./no/such/model does not exist" in one_line_error(
        capsys, "run", "--model", "./no/such/model", "--concept", tiny_concept_path, "--run-dir", tmp_path / "c")
    import agmask.preflight

    monkeypatch.setattr(agmask.preflight.os, "access", lambda path, mode: False)  # root ignores chmod
    assert "is not writable" in one_line_error(capsys, *base, "--run-dir", tmp_path / "ro")


def test_an_os_error_during_a_stage_is_one_line(capsys, tmp_path, tiny_concept_path, monkeypatch):
    import agmask.stages.baseline as baseline

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "r" / "baseline" / "answers.jsonl"))

    monkeypatch.setattr(baseline, "write_jsonl", denied)
    line = one_line_error(capsys, "baseline", "--model", "tiny:llama", "--concept", tiny_concept_path,
                          "--run-dir", tmp_path / "r", "-q")
    assert "Permission denied" in line and "answers.jsonl" in line


@pytest.mark.parametrize("damage, needle", [("config", "without config.json"), ("weights", "is damaged")])
def test_a_broken_model_writes_no_manifest(capsys, tmp_path, tiny_concept_path, damage, needle):
    from agmask.models import load

    model, tok, _ = load("tiny:llama")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    if damage == "config":
        (tmp_path / "m" / "config.json").unlink()
    else:
        weights = tmp_path / "m" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = one_line_error(capsys, "run", "--model", tmp_path / "m", "--concept", tiny_concept_path,
                          "--run-dir", tmp_path / "r")
    assert needle in line and not (tmp_path / "r").exists()
