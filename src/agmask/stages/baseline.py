"""Stage 0, baseline: what the base model knows, per prompt of every question set.

Writes `baseline/answers.jsonl` (greedy answer, answer log-prob, first-token rank and the
multiple-choice view per prompt) and `baseline/summary.json` (per set).
"""
from __future__ import annotations

from dataclasses import field
from pathlib import Path

from agmask.config import NonNegativeInt, PositiveInt, stage_options
from agmask.distributed import map_sharded
from agmask.files import write_json, write_jsonl
from agmask.scoring import (QA_SETS, ItemScore, PrefixKV, answer_hit, generate, prefix_for, score_item, select_items,
                            summarize)

NAME = "baseline"
DIR = "baseline"
DEPENDS: tuple[str, ...] = ()
SCORES_ANSWERS = True  # its outputs hold answer scores (agmask.scoring.SCORING_VERSION is in its input hash)
PARALLEL = True  # several processes: each scores and answers its block of the prompts


@stage_options
class Config:
    generation_tokens: PositiveInt = field(default=16, metadata={"help": "greedy reply length after the lead"})
    batch_size: PositiveInt = field(default=32, metadata={
        "help": "generation batch, over every set (a decoding step reads every weight once per batch)"})
    max_items: NonNegativeInt = field(default=0, metadata={
        "help": "prompts per set, spread over families (as the evaluation picks them); 0 = all"})


PRESETS = {"demo": {"generation_tokens": 12, "max_items": 8}, "full": {"generation_tokens": 32}}


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    model, tokenizer, _ = session.model()
    spec = session.spec
    # the same selection as the evaluation's, so the evaluation reuses these rows as its base side
    picked = [(set_name, index, item) for set_name in QA_SETS
              for index, item in select_items(spec.items(set_name), conf.max_items)]

    def score_and_answer(part: list) -> list[ItemScore]:
        """Every prompt scored (its prefix keys kept), then all answered greedily in large batches."""
        kv = PrefixKV()
        with session.reporter.task("scoring", len(part)) as advance:
            rows = []
            for set_name, index, item in part:
                rows.append(score_item(model, tokenizer, spec, set_name, index, item, kv=kv))  # index = place in the set
                advance(1)
        with session.reporter.task("generating", len(part)) as advance:
            gens = generate(model, tokenizer, [prefix_for(tokenizer, spec, s, it) for s, _, it in part],
                            max_new_tokens=conf.generation_tokens, batch_size=conf.batch_size, on_batch=advance, kv=kv)
        for row, (_, _, item), g in zip(rows, part, gens):
            row.generation, row.hit = g[0], answer_hit(g[0], spec.answers_for(item))
        return rows

    rows = [r.to_dict() for r in map_sharded(score_and_answer, picked)]
    summary = {set_name: summarize([r for r in rows if r["set"] == set_name]) for set_name in QA_SETS}
    write_jsonl(Path(run_dir) / DIR / "answers.jsonl", rows)
    write_json(Path(run_dir) / DIR / "summary.json", summary)
