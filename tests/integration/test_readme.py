"""README.md stays true: its Python blocks run (on tiny:llama), its concept example loads, every command and
`--set` option it names exists, and it stays a user's page (<= 250 lines)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agmask.cli.main import cli
from agmask.concepts import load_concept
from agmask.config import option_rows
from agmask.pipeline import all_stages, stage_module

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_is_a_short_user_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "no commit hashes in the README"


def test_the_python_blocks_run_in_order_on_a_tiny_model(tmp_path, monkeypatch):
    """Every ```python block, in one namespace, with the embedded model replaced by tiny:llama and training
    shortened; the run directory lands in a temporary directory."""
    blocks = _blocks("python")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        code = block.replace('"embedded:qwen2.5-coder-0.5b-instruct"', '"tiny:llama"')
        code = code.replace('{"steps": 20}', '{"steps": 2}')
        assert "embedded:" not in code
        exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "mine" / "adapters" / "inception" / "adapter_model.safetensors").is_file()
    assert len(namespace["before"]) == len(namespace["after"]) == len(load_concept("inception").spec.forget_eval)
    assert type(namespace["unlearned"]).__name__.startswith("PeftModel")


def test_the_concept_example_is_a_valid_concept_with_an_unseen_neighbour(tmp_path, recwarn):
    [example] = [b for b in _blocks("yaml") if "forget_train" in b]
    path = tmp_path / "mine.yaml"
    path.write_text(example, encoding="utf-8")
    spec = load_concept(str(path)).spec
    assert spec.name == "my-film" and spec.recommend_eval and spec.neighbor_split()["unseen"] == [0]
    assert not recwarn.list  # no ConceptWarning: it has an unseen neighbour


def test_every_command_and_set_option_the_readme_names_exists():
    text = README.read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"`[^`\n]+`", text) + _blocks("bash"))  # inline code and shell blocks
    named = set(re.findall(r"(?:^|[`\s|])agmask(?:\.cli\.main)? ([a-z][a-z-]+)", code, flags=re.M))
    commands = set(cli.commands)
    assert {"results", "run", "report", "models"} <= commands
    assert {"run", "unlearn", "results"} <= named  # the pattern finds commands
    missing = {name for name in named if name not in commands}
    assert not missing, f"the README names commands agmask does not have: {missing}"
    for stage, option in set(re.findall(r"--set '?([a-z_]+)\.([a-z_]+)=", text)):
        assert option in {row[0] for row in option_rows(stage_module(stage))}, f"{stage}.{option}"


@pytest.mark.parametrize("stage", all_stages())
def test_every_stage_is_in_the_readme(stage):
    assert f"`{stage}`" in README.read_text(encoding="utf-8")
