"""docs/RESULTS.md from run directories: a section per run (label, purpose, provenance), then its tables.

Every table is followed by the file it read and the command and commit that made that stage (from the stage's
DONE marker, see `agmask.provenance`), so no number on the page lacks its origin. Stages whose results are not
current (an upstream stage reran since) are left out with the reason, as the report does.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from agmask.errors import AgmaskError
from agmask.files import read_json
from agmask.results import evaluation, stages
from agmask.results.markdown import code, table
from agmask.results.spec import LABELS, ResultsSpec, RunEntry


@dataclass
class RunView:
    """One run directory as RESULTS.md reads it: manifest, metrics, currency and provenance, each read once."""

    root: Path

    @cached_property
    def manifest(self) -> dict:
        path = self.root / "manifest.json"
        return read_json(path) if path.is_file() else {}

    @cached_property
    def metrics(self) -> dict:
        path = self.root / "eval" / "metrics.json"
        return read_json(path).get("metrics", {}) if path.is_file() else {}

    @cached_property
    def status(self) -> dict[str, str | None]:
        """{stage: None when current, else why not} (agmask.currency); stages it does not know are absent."""
        from agmask.currency import current_stages

        return current_stages(self.root)

    def made_by(self, stage: str | None) -> tuple[str | None, str | None]:
        """(command, commit) recorded in the stage's DONE marker, else in the manifest."""
        from agmask.pipeline import all_stages, read_done

        done = (read_done(self.root, stage) if stage in all_stages() else None) or {}  # not (yet) a stage: manifest
        return (done.get("command") or self.manifest.get("command"), done.get("commit") or self.manifest.get("commit"))


@dataclass(frozen=True)
class Section:
    title: str
    stage: str | None  # whose DONE marker names the command and commit; None: several stages (the manifest's)
    source: str  # what it reads, relative to the run directory
    render: Callable[[RunView], str | None]


def _metrics(title: str, fn: Callable[[dict], str | None]) -> Section:
    """A section rendered from eval/metrics.json's metrics (absent: nothing to show)."""
    return Section(title, "evaluate", "eval/metrics.json", lambda run: fn(run.metrics) if run.metrics else None)


def _files(title: str, stage: str | None, source: str, fn: Callable[[Path], str | None]) -> Section:
    """A section rendered from the run directory's files (`source` names them)."""
    return Section(title, stage, source, lambda run: fn(run.root))


# In page order: the verdict first, then what the model knew, the adapter, the details, the optional stages.
SECTIONS = [
    _metrics("Targets", evaluation.targets),
    _files("Baseline: what the base model knows", "baseline", "baseline/summary.json", stages.baseline),
    _files("Rewording stability of the base model", "perturb", "perturb/stability.json", stages.perturb),
    _files("Attribution and mask", "mask", "attribute/layers.json, mask/mask.json", stages.attribution),
    _files("Adapter", "unlearn", "unlearn/summary.json", stages.adapter),
    _metrics("Forgetting and locality per set", evaluation.per_set),
    _metrics("Adversarial wordings", evaluation.adversarial),
    _metrics("Answer formats", evaluation.formats),
    _metrics("Attacks", evaluation.attacks),
    _metrics("Recommendations", evaluation.recommendations),
    _files("Methods compared", "compare", "compare/compare.json", stages.compare),
    _files("Causal check", "ablate", "ablate/ablation.json", stages.ablate),
    _files("Recipe search on the training halves", "tune", "tune/trials.jsonl, tune/choice.json", stages.tune),
    _files("Stage timing", None, "*/DONE", stages.timing),
    _files("Incremental: forgetting of every concept after each", None, "regression.json", stages.regression),
]


def _caption(run: RunView, section: Section) -> str:
    command, commit = run.made_by(section.stage)
    made = (f"made by {code(command)} at {code(commit or 'an unrecorded commit')}" if command
            else "made before agmask recorded commands")
    return f"<sub>From `{section.source}`; {made}.</sub>"


def _run_sections(run: RunView, level: int) -> list[str]:
    out, left_out = [], {}
    for section in SECTIONS:
        why = run.status.get(section.stage) if section.stage else None
        if why is not None:
            left_out[section.stage] = why
            continue
        body = section.render(run)
        if body:
            out += [f"{'#' * level} {section.title}", body, _caption(run, section)]
    if left_out:
        out.insert(0, "Left out, not current:\n\n" + "\n".join(f"- {stage}: {why}" for stage, why in left_out.items()))
    return out


def _facts(run: RunView) -> str:
    m = run.manifest
    model, concept = m.get("model") or {}, m.get("concept") or {}
    parts = [f"model {code(str(model.get('spec')))}"]
    if concept:
        parts.append(f"concept {code(str(concept.get('name')))} ({code(str(concept.get('source')))})")
    elif m.get("concepts"):
        parts.append("concepts " + ", ".join(code(str(c)) for c in m["concepts"]))
    parts += [f"{key} {code(str(m[key]))}" for key in ("budget", "seed", "device") if m.get(key) is not None]
    recipe = m.get("recipe") or {}
    if recipe.get("name"):
        parts.append(f"recipe {code(str(recipe['name']))}"
                     + (f" (tune trial {recipe['trial']})" if recipe.get("trial") is not None else ""))
    return "; ".join(parts)


_RUN_DIRECTORY = re.compile(r"^Run directory `([^`]+)`:", re.MULTILINE)
_KEPT = "*Kept from the previous page*"


def previous_sections(page: str) -> dict[str, str]:
    """{run directory: its tables} from a page this module wrote: what follows the section's heading, label and
    purpose, from its `Run directory` line on. Sections that were never rendered from a directory are absent."""
    kept = {}
    for section in re.split(r"^## ", page, flags=re.MULTILINE)[1:]:
        found = _RUN_DIRECTORY.search(section)
        if found:
            kept[found.group(1)] = section[found.start():].rstrip("\n")
    return kept


def render_run(entry: RunEntry, previous: dict[str, str] | None = None) -> str:
    """The section of one listed run: heading, label and purpose, provenance, then its tables. A run directory
    that is not here (run directories are not in git) keeps the tables `previous` rendered from it, saying so."""
    root = Path(entry.run_dir)
    lines = [f"## {entry.heading}", f"**{entry.label}** ({LABELS[entry.label]}). {entry.purpose}"]
    if not root.is_dir():
        if str(root) in (previous or {}):
            body = previous[str(root)]
            note = (f"{_KEPT}: {code(str(root))} is not on the machine that wrote this page, so its tables are as "
                    "`agmask results` last rendered them from that directory.")
            first, _, rest = body.partition("\n\n")
            return "\n\n".join(lines + [first] + ([] if rest.startswith(_KEPT) else [note]) + ([rest] if rest else []))
        how = f" Make it with {code(entry.command)}, then run `agmask results` again." if entry.command else ""
        return "\n\n".join(lines + [f"*Not run yet*: {code(str(root))} does not exist.{how}"])
    run = RunView(root)
    if not run.manifest:
        return "\n\n".join(lines + [f"*Not a run directory*: {code(str(root))} has no manifest.json."])
    command, commit = run.manifest.get("command"), run.manifest.get("commit")
    lines.append(f"Run directory {code(str(root))}: {_facts(run)}.")
    if command:
        lines.append(f"Last command that completed a stage: {code(command)} at {code(commit or '-')}.")
    elif not list(root.glob("*/DONE")):
        lines.append("No stage has completed yet: regenerate the page once one has.")
    else:
        lines.append("Its commands were not recorded (made before agmask recorded them).")
    if run.manifest.get("concepts"):  # incremental: one run directory per concept under the top one
        for concept_dir in (root / Path(r).name for r in run.manifest.get("runs", [])):
            sub = RunView(concept_dir)
            lines += [f"### {concept_dir.name}", *_run_sections(sub, level=4)]
        lines += _run_sections(RunView(root), level=3)
    else:
        lines += _run_sections(run, level=3)
    return "\n\n".join(lines)


def render_results(spec: ResultsSpec, listed_in: str, previous: dict[str, str] | None = None) -> str:
    """The whole page: what it is, how to regenerate it, an index, then one section per run (`previous`: the
    tables of run directories not here, from `previous_sections` of the page this one replaces)."""
    index = table(["run", "label", "purpose"], [[e.heading, e.label, e.purpose] for e in spec.runs])
    labels = "\n".join(f"- **{name}**: {text}." for name, text in LABELS.items())
    head = [
        "# Results",
        f"Generated by `agmask results` from the run directories {listed_in}: do not edit by hand. "
        "Change the list or rerun a run, then regenerate. Under every table: the file it was read from, the "
        "command that made that stage and the commit of the source that ran it (`+dirty`: with uncommitted "
        "changes). The method and the meaning of each measure: [METHOD.md](METHOD.md).",
        "Labels:\n\n" + labels,
        index,
    ]
    return "\n\n".join(head + [render_run(e, previous) for e in spec.runs]) + "\n"


def write_results(spec: ResultsSpec, out: Path, listed_in: str) -> tuple[int, int, int]:
    """Render and write atomically, keeping from the page `out` replaces the tables of run directories that are
    not here; returns (runs rendered from their directory, runs kept from the previous page, runs not run yet)."""
    from agmask.files import write_text

    try:
        previous = previous_sections(out.read_text(encoding="utf-8")) if out.is_file() else {}
    except (OSError, UnicodeDecodeError) as e:
        raise AgmaskError(f"cannot read {out}, the page to replace: {e}") from None
    text = render_results(spec, listed_in, previous)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, text)
    except OSError as e:
        raise AgmaskError(f"cannot write {out}: {e.strerror or e}") from None
    absent = [str(e.run_dir) for e in spec.runs if not Path(e.run_dir).is_dir()]
    kept = sum(run_dir in previous for run_dir in absent)
    return len(spec.runs) - len(absent), kept, len(absent) - kept
