"""Stage 0, baseline: what the base model knows, per prompt of every question set.

Writes `baseline/answers.jsonl` (greedy answer, answer log-prob, first-token rank and the
multiple-choice view per prompt) and `baseline/summary.json` (per set).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agmask.distributed import map_sharded
from agmask.files import write_json, write_jsonl
from agmask.scoring import QA_SETS, score_items, select_items, summarize

NAME = "baseline"
DIR = "baseline"
DEPENDS: tuple[str, ...] = ()
PARALLEL = True  # several processes: each scores and generates its block of every set


@dataclass(frozen=True)
class Config:
    generation_tokens: int = 16  # greedy reply length after the lead
    batch_size: int = 8  # generation batch
    max_items: int = 0  # prompts per set, spread over families (as the evaluation picks them); 0 = all


PRESETS = {"demo": {"generation_tokens": 12, "max_items": 8}, "full": {"generation_tokens": 32}}


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    model, tokenizer, _ = session.model()
    rows, summary = [], {}
    for set_name in QA_SETS:
        # the same selection as the evaluation's, so the evaluation reuses these rows as its base side
        pairs = select_items(session.spec.items(set_name), conf.max_items)
        scored = map_sharded(lambda its: score_items(model, tokenizer, session.spec, set_name, its,
                                                     generation_tokens=conf.generation_tokens,
                                                     batch_size=conf.batch_size, reporter=session.reporter),
                             [it for _, it in pairs])
        set_rows = [dict(r.to_dict(), index=i) for r, (i, _) in zip(scored, pairs)]  # index = place in the set
        rows.extend(set_rows)
        summary[set_name] = summarize(set_rows)
    write_jsonl(Path(run_dir) / DIR / "answers.jsonl", rows)
    write_json(Path(run_dir) / DIR / "summary.json", summary)
