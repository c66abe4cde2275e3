"""What produced a run's results: the command and commit in the manifest and in every DONE marker."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from agmask import __version__
from agmask.cli.main import main
from agmask.config import RunConfig
from agmask.files import read_json
from agmask.pipeline import read_done, run_pipeline
from agmask.provenance import api_call, source_commit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git checkout with a tracked package folder `src/pkg` and an ignored `.venv`."""
    repo = tmp_path / "repo"
    (repo / "src" / "pkg").mkdir(parents=True)
    (repo / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text(".venv/\n")
    _git(repo.parent, "init", "-q", str(repo))
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return repo


def test_source_commit_is_head_and_marks_a_changed_tree(repo):
    pkg = repo / "src" / "pkg"
    head = _git(repo, "rev-parse", "HEAD")
    assert source_commit(pkg) == head
    (pkg / "mod.py").write_text("x = 2\n")
    assert source_commit(pkg) == head + "+dirty"
    _git(repo, "checkout", "-q", "--", ".")
    (repo / "notes.txt").write_text("untracked, not ignored\n")
    assert source_commit(pkg) == head + "+dirty"


def test_source_commit_falls_back_to_the_version_outside_a_checkout(repo, tmp_path):
    installed = repo / ".venv" / "site-packages" / "pkg"  # inside the repository, but ignored: not its source
    installed.mkdir(parents=True)
    (installed / "mod.py").write_text("x = 1\n")
    assert source_commit(installed) == f"agmask=={__version__}"
    loose = tmp_path / "loose"
    loose.mkdir()
    assert source_commit(loose) == f"agmask=={__version__}"


def test_api_call_names_only_the_options_that_differ_from_the_defaults():
    cfg = RunConfig(model="tiny:llama", concepts=["inception"], run_dir=Path("runs/x"),
                    overrides={"unlearn": {"steps": 3}})
    assert api_call(cfg, ["baseline"]) == ("run_pipeline(RunConfig(model='tiny:llama', run_dir='runs/x', "
                                           "overrides={'unlearn': {'steps': 3}}), stages=['baseline'])")
    assert api_call(RunConfig()) == "run_pipeline(RunConfig())"


def test_the_manifest_and_done_record_the_python_call_then_the_cli_command(tmp_path, tiny_concept_path):
    concept = tmp_path / "concept.yaml"
    shutil.copy(tiny_concept_path, concept)
    cfg = RunConfig(model="tiny:llama", concepts=[str(concept)], run_dir=tmp_path / "run")
    run_pipeline(cfg, stages=["baseline"])
    manifest, done = read_json(cfg.run_dir / "manifest.json"), read_done(cfg.run_dir, "baseline")
    call = api_call(cfg, ["baseline"])
    assert manifest["command"] == done["command"] == call
    assert manifest["commit"] == done["commit"] == source_commit()

    argv = ["baseline", "--run-dir", str(cfg.run_dir), "-q", "--force", "--set", "baseline.generation_tokens=2"]
    assert main(argv) == 0
    command = shlex.join(["agmask", *argv])
    assert read_json(cfg.run_dir / "manifest.json")["command"] == read_done(cfg.run_dir, "baseline")["command"] == command
    assert read_json(cfg.run_dir / "manifest.json")["model"]["spec"] == "tiny:llama"  # the rest kept


def test_a_refused_stage_leaves_the_recorded_command(tmp_path, tiny_concept_path, capsys):
    concept = tmp_path / "concept.yaml"
    shutil.copy(tiny_concept_path, concept)
    cfg = RunConfig(model="tiny:llama", concepts=[str(concept)], run_dir=tmp_path / "run")
    run_pipeline(cfg, stages=["baseline"])
    before = (cfg.run_dir / "manifest.json").read_bytes()
    assert main(["mask", "--run-dir", str(cfg.run_dir), "-q"]) != 0  # attribute has not run: refused
    assert (cfg.run_dir / "manifest.json").read_bytes() == before
