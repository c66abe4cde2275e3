"""Incremental mode: several concepts unlearned one after another, one adapter each, stacked.

Layout: `<run_dir>/manifest.json` lists the concepts; `<run_dir>/<concept>/` is an ordinary run
directory for each concept, whose unlearn stage trains on top of the earlier adapters (active,
frozen). After each concept, every concept so far is re-scored with the whole stack into
`<run_dir>/regression.json`: forgetting must not regress when a later concept is added.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from agmask import transaction
from agmask.concepts import LoadedConcept
from agmask.config import RunConfig
from agmask.distributed import barrier, is_main
from agmask.errors import AgmaskError
from agmask.files import read_jsonl, write_json
from agmask.progress import Reporter
from agmask.provenance import source_commit
from agmask.rundir import RunDir
from agmask.scoring import BASE_KNOWN_RANK, score_items
from agmask.session import Session


def regression_row(session: Session, model, after: str) -> dict:
    """Forgetting of `session`'s concept under `model` (the stack so far), against its own baseline."""
    _, tokenizer, _ = session.model()
    spec = session.spec
    base = {(r["set"], r["index"]): r for r in read_jsonl(session.paths.baseline_answers)}
    row = {"after": after, "concept": spec.name}
    for set_name in ("forget_eval", "neighbors"):
        # the items the baseline scored (a demo baseline scores a subset): their index in the set
        indices = [i for i in range(len(spec.items(set_name))) if (set_name, i) in base]
        items = [spec.items(set_name)[i] for i in indices]
        scored = [dict(r.to_dict(), index=i) for i, r in zip(indices, score_items(model, tokenizer, spec, set_name, items))]
        known = [r for r in scored if base[(set_name, r["index"])]["first_token_rank"] <= BASE_KNOWN_RANK]
        mc = [r for r in known if r["mc_top1"] is not None]
        deltas = [r["answer_logprob"] - base[(set_name, r["index"])]["answer_logprob"] for r in scored]
        row[set_name] = {
            "base_known_n": len(known),
            "mc_top1_rate_base_known": statistics.fmean(float(r["mc_top1"]) for r in mc) if mc else None,
            "median_first_token_rank_base_known": statistics.median(r["first_token_rank"] for r in known) if known else None,
            "mean_logprob_change": statistics.fmean(deltas),
            "mean_abs_logprob_change": statistics.fmean(abs(d) for d in deltas),
        }
        if set_name == "neighbors":  # locality twice: answers a training set holds, and answers it never saw
            for status, idx in spec.neighbor_split().items():
                part = [abs(d) for r, d in zip(scored, deltas) if r["index"] in set(idx)]
                row[set_name][f"{status}_n"] = len(part)
                row[set_name][f"{status}_mean_abs_logprob_change"] = statistics.fmean(part) if part else None
    return row


def run_incremental(cfg: RunConfig, stages: list[str], reporter: Reporter,
                    concepts: list[LoadedConcept]) -> list[Path]:
    """`concepts` are loaded and validated (with everything else) before any work."""
    from agmask.lora import load_adapter
    from agmask.pipeline import check_manifest, run_stage

    top = RunDir(cfg.run_dir)
    sessions: list[Session] = []
    loaded = None
    regression: list[dict] = []
    names = [c.spec.name for c in concepts]
    if len(set(names)) != len(names):
        raise AgmaskError(f"the same concept is given twice ({', '.join(names)})")
    for loaded_concept in concepts:
        priors = [s.adapter_dir for s in sessions]
        session = Session(cfg, loaded_concept, top.root / loaded_concept.spec.name, reporter, priors)
        session._loaded = loaded  # one model load for the whole run
        if is_main() and session.run_dir.is_dir():
            transaction.recover(session.run_dir)
        barrier()
        check_manifest(session)
        for stage in stages:
            run_stage(session, stage)
        loaded = session._loaded
        sessions.append(session)
        if not session.adapter_dir.is_dir():
            continue  # the unlearn stage was not part of this invocation
        model, _, _ = session.model()
        stack = model
        for s in sessions:
            stack = load_adapter(stack, s.adapter_dir, name=s.spec.name).model
        reporter.log(f"regression check after {session.spec.name}: re-scoring {len(sessions)} concept(s)")
        for s in sessions:
            s._loaded = session._loaded
            regression.append(regression_row(s, stack, after=session.spec.name))
        session.drop_adapters(stack)
        loaded = session._loaded
    if is_main():  # several processes: each scored the regression rows; the main one writes them
        write_json(top.manifest, {
            "concepts": [s.concept.source.removeprefix("shipped:") for s in sessions], "model": {"spec": cfg.model},
            "runs": [str(s.run_dir) for s in sessions], "command": cfg.command, "commit": source_commit()})
        if regression:
            write_json(top.regression, regression)
    barrier()
    return [s.run_dir for s in sessions]
