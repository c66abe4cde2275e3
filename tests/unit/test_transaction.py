"""Stage transactions, currency and the optional-stage mechanism, with test-double stages (no model is loaded)."""
from __future__ import annotations

import sys
import types
from dataclasses import field
from pathlib import Path

import click
import pytest

from agmask import pipeline, transaction
from agmask.cli.main import main
from agmask.config import RunConfig, stage_options
from agmask.currency import current_stages
from agmask.errors import StageError
from agmask.files import read_json
from agmask.session import Session


@stage_options
class UpConfig:
    value: int = field(default=1, metadata={"help": "written to the outputs"})
    fail: bool = field(default=False, metadata={"help": "raise after writing every output"})


def _up_run(cfg, run_dir, session):
    conf = session.stage_config("fake_up")
    (Path(run_dir) / "fake_up").mkdir(exist_ok=True)
    (Path(run_dir) / "fake_up" / "out.txt").write_text(f"up {conf.value}")
    (Path(run_dir) / "fake_extra").mkdir(exist_ok=True)
    (Path(run_dir) / "fake_extra" / "data.txt").write_text(f"extra {conf.value}")
    if conf.fail:
        raise RuntimeError("fake_up failed after writing its outputs")


def _down_run(cfg, run_dir, session):
    text = (Path(run_dir) / "fake_up" / "out.txt").read_text()
    (Path(run_dir) / "fake_down").mkdir(exist_ok=True)
    (Path(run_dir) / "fake_down" / "out.txt").write_text(text + " -> down")


def _module(name: str, depends=(), **attrs) -> types.ModuleType:
    module = types.ModuleType(f"agmask.stages.{name}")
    module.NAME, module.DIR, module.DEPENDS = name, name, tuple(depends)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


@pytest.fixture
def fakes(monkeypatch):
    """A default stage `fake_up` (with an extra output) and an optional stage `fake_down` that reads it."""
    up = _module("fake_up", EXTRA_OUTPUTS=["fake_extra"], Config=UpConfig, PRESETS={}, run=_up_run)
    down = _module("fake_down", depends=("fake_up",), run=_down_run)
    for module in (up, down):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(pipeline, "STAGES", ["fake_up"])
    monkeypatch.setattr(pipeline, "OPTIONAL_STAGES", ["fake_down"])
    return up, down


def _cfg(tmp_path, tiny_concept_path, **options) -> RunConfig:
    return RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run",
                     overrides={"fake_up": options} if options else {})


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and ".staging" not in p.parts}


def test_an_optional_stage_runs_only_when_asked(fakes, tmp_path, tiny_concept_path):
    cfg = _cfg(tmp_path, tiny_concept_path)
    pipeline.run_pipeline(cfg)
    assert pipeline.read_done(cfg.run_dir, "fake_up") and pipeline.read_done(cfg.run_dir, "fake_down") is None
    pipeline.run_pipeline(cfg, stages=[*pipeline.STAGES, "fake_down"])
    done = pipeline.read_done(cfg.run_dir, "fake_down")
    assert done and set(done["outputs"]) == {"fake_down/out.txt"}
    assert (cfg.run_dir / "fake_down" / "out.txt").read_text() == "up 1 -> down"
    assert pipeline.run_stage(Session.create(cfg), "fake_down") is False  # DONE hash: up to date


def test_the_cli_runs_optional_stages_with_with_and_has_a_command_for_each(fakes, tmp_path, tiny_concept_path,
                                                                           capsys):
    from agmask.cli.stages_cmd import register_stage_commands

    group = click.Group()
    register_stage_commands(group)
    assert {"fake_up", "fake_down"} <= set(group.commands)
    args = ["--model", "tiny:llama", "--concept", str(tiny_concept_path), "--run-dir", str(tmp_path / "run"), "-q"]
    assert main(["run", *args, "--with", "fake_dwn"]) == 2
    assert "--with fake_dwn: not an optional stage (did you mean fake_down?)" in capsys.readouterr().err
    assert main(["run", *args, "--with", "fake_down"]) == 0
    assert pipeline.read_done(tmp_path / "run", "fake_down") is not None


def test_a_failed_stage_leaves_its_previous_outputs_extra_ones_included(fakes, tmp_path, tiny_concept_path):
    cfg = _cfg(tmp_path, tiny_concept_path)
    pipeline.run_pipeline(cfg, stages=["fake_up", "fake_down"])
    before = _files(cfg.run_dir)
    with pytest.raises(RuntimeError, match="after writing"):
        pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, value=2, fail=True), stages=["fake_up"])
    assert _files(cfg.run_dir) == before  # fake_extra/ too: it was written into the staging view only
    assert (cfg.run_dir / ".staging" / "fake_up" / "fake_extra" / "data.txt").read_text() == "extra 2"
    assert all(why is None for why in current_stages(cfg.run_dir).values())


def test_a_rerun_with_new_outputs_marks_dependants_stale(fakes, tmp_path, tiny_concept_path):
    cfg = _cfg(tmp_path, tiny_concept_path)
    pipeline.run_pipeline(cfg, stages=["fake_up", "fake_down"])
    pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, value=2), stages=["fake_up"])
    assert (cfg.run_dir / "fake_extra" / "data.txt").read_text() == "extra 2"
    assert pipeline.read_done(cfg.run_dir, "fake_down") is None
    assert read_json(cfg.run_dir / "fake_down" / "STALE")["reason"] == "stage fake_up reran since it ran"
    assert "fake_up reran" in current_stages(cfg.run_dir)["fake_down"]
    pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, value=2), stages=["fake_down"])
    assert not (cfg.run_dir / "fake_down" / "STALE").exists()
    assert (cfg.run_dir / "fake_down" / "out.txt").read_text() == "up 2 -> down"


def test_a_forced_rerun_with_the_same_outputs_keeps_dependants(fakes, tmp_path, tiny_concept_path):
    cfg = _cfg(tmp_path, tiny_concept_path)
    pipeline.run_pipeline(cfg, stages=["fake_up", "fake_down"])
    pipeline.run_pipeline(cfg.model_copy(update={"force": True}), stages=["fake_up"])
    assert pipeline.read_done(cfg.run_dir, "fake_down") is not None


def test_a_stage_alone_refuses_an_upstream_that_is_not_current(fakes, tmp_path, tiny_concept_path):
    cfg = _cfg(tmp_path, tiny_concept_path)
    pipeline.run_pipeline(cfg, stages=["fake_up", "fake_down"])
    with pytest.raises(StageError, match=r"needs stage fake_up to be current, but its options changed \(value 1 -> 3"):
        pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, value=3), stages=["fake_down"])
    (cfg.run_dir / "fake_up" / "out.txt").write_text("edited")
    with pytest.raises(StageError, match=r"fake_up/out.txt does not match the hash recorded .*`agmask fake_up --force"):
        pipeline.run_pipeline(cfg.model_copy(update={"force": True}), stages=["fake_down"])
    assert current_stages(cfg.run_dir)["fake_up"].startswith("fake_up/out.txt does not match")
    assert current_stages(cfg.run_dir)["fake_down"].startswith("stage fake_up is not current")


def test_a_crash_in_the_middle_of_a_commit_is_finished_by_the_next_start(fakes, tmp_path, tiny_concept_path,
                                                                         monkeypatch):
    cfg = _cfg(tmp_path, tiny_concept_path)
    pipeline.run_pipeline(cfg, stages=["fake_up"])
    real_replace = transaction.os.replace

    def crash_before_the_last_swap(src, dst):
        # fake_extra swapped in and the old fake_up moved away; the process dies before the new one moves in
        if Path(dst) == cfg.run_dir / "fake_up" and ".staging" in str(src):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(transaction.os, "replace", crash_before_the_last_swap)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, value=2), stages=["fake_up"])
    monkeypatch.setattr(transaction.os, "replace", real_replace)
    assert not (cfg.run_dir / "fake_up").exists()  # half swapped
    assert transaction.recover(cfg.run_dir) == ["fake_up"]
    assert (cfg.run_dir / "fake_up" / "out.txt").read_text() == "up 2"
    assert (cfg.run_dir / "fake_extra" / "data.txt").read_text() == "extra 2"
    assert pipeline.read_done(cfg.run_dir, "fake_up")["outputs"].keys() == {"fake_up/out.txt", "fake_extra/data.txt"}
    assert not (cfg.run_dir / ".staging").exists() or not any((cfg.run_dir / ".staging").iterdir())
    assert pipeline.run_stage(Session.create(_cfg(tmp_path, tiny_concept_path, value=2)), "fake_up") is False


def test_a_resumable_stage_continues_in_its_view_and_another_starts_afresh(fakes, tmp_path, tiny_concept_path):
    up, _ = fakes
    cfg = _cfg(tmp_path, tiny_concept_path)
    session = Session.create(cfg)
    pipeline.write_manifest(session)
    view = transaction.prepare(cfg.run_dir, up, "hash-1", fresh=False)
    (view / "fake_up" / "partial.txt").write_text("half done")
    for resumable, same_hash, fresh, kept in [(True, True, False, True), (True, False, False, False),
                                              (True, True, True, False), (False, True, False, False)]:
        (view / "fake_up").mkdir(parents=True, exist_ok=True)
        (view / "fake_up" / "partial.txt").write_text("half done")
        up.RESUMABLE = resumable
        view = transaction.prepare(cfg.run_dir, up, "hash-1" if same_hash else "hash-2", fresh=fresh)
        assert (view / "fake_up" / "partial.txt").exists() == kept
        assert (view / "manifest.json").is_symlink()
        transaction.prepare(cfg.run_dir, up, "hash-1", fresh=True)  # back to the first hash
