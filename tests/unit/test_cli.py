"""The CLI: user mistakes exit non-zero with exactly one line on stderr, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from agmask.cli.main import main


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, needle", [
    (["run", "--model", "gpt-nothing"], "unknown model 'gpt-nothing'"),
    (["baseline", "--model", "tiny:llama", "--concept", "/nope.yaml"], "does not exist"),
    (["run", "--model", "tiny:llama", "--set", "baseline"], "expected STAGE.OPTION=VALUE"),
    (["run", "--model", "tiny:llama", "--set", "baseline.nope=1"], "unknown option(s) for stage baseline: nope"),
    (["run", "--model", "tiny:llama", "--set", "unlearn.forget_all_leads=maybe"],
     "bad option for stage unlearn: forget_all_leads must be true or false, got 'maybe'"),
    (["run", "--model", "tiny:llama", "--set", "unlearn.steps=2.5"], "unlearn: steps must be an integer, got 2.5"),
    (["run", "--model", "tiny:llama", "--set", "unlearn.lr=fast"], "unlearn: lr must be a number, got 'fast'"),
    (["run", "--budget", "huge"], "'huge' is not one of"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["models", "--clear", "nope"], "unknown embedded model 'nope'"),
    (["run", "--model", "tiny:llama", "--concept", "nope"], "unknown concept 'nope'"),
])
def test_user_mistakes_get_one_line(capsys, tmp_path, args, needle):
    code, out, err = _run(capsys, *args, *(["--run-dir", str(tmp_path / "r")] if args[0] in ("run", "baseline") else []))
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "Traceback" not in err + out


def test_stage_needs_its_upstream(capsys, tmp_path, tiny_concept_path, monkeypatch):
    from agmask import pipeline

    monkeypatch.setattr(pipeline, "STAGES", pipeline.STAGES + ["fake_downstream"])
    import types

    fake = types.ModuleType("agmask.stages.fake_downstream")
    fake.NAME, fake.DIR, fake.DEPENDS = "fake_downstream", "fake", ("baseline",)
    fake.run = lambda cfg, run_dir, session: None
    monkeypatch.setitem(sys.modules, "agmask.stages.fake_downstream", fake)
    with pytest.raises(Exception, match="needs stage baseline first"):
        pipeline.run_pipeline(pipeline.RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)],
                                                 run_dir=tmp_path / "r"), stages=["fake_downstream"])


def test_a_stage_command_prints_the_baseline_table(capsys, tmp_path, tiny_concept_path):
    code, out, err = _run(capsys, "baseline", "--model", "tiny:qwen2", "--concept", str(tiny_concept_path),
                          "--run-dir", str(tmp_path / "r"), "-q")
    assert code == 0, err
    for needle in ("forget_eval", "mean answer log-prob", "MC top-1", "greedy hit (base-known)"):
        assert needle in out
    # a stage command reuses the manifest's model and concept
    code, out, err = _run(capsys, "probe", "--run-dir", str(tmp_path / "r"), "-q")
    assert code == 0, err
    assert (tmp_path / "r" / "probe" / "activations.safetensors").is_file()


def test_models_lists_both_embedded_models(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0
    assert "qwen2.5-coder-0.5b-instruct" in out and "smollm2-135m-instruct" in out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "agmask.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "run" in result.stdout


def test_quiet_turns_off_the_progress_bars_of_transformers_too():
    from transformers.utils import logging as hf_logging

    from agmask.cli.stages_cmd import _reporter

    try:
        assert not _reporter(True).enabled
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
    assert _reporter(False).enabled and hf_logging.is_progress_bar_enabled()
