"""Stage 7, evaluate: base vs base + adapter on the evaluation sets, metric by metric (resumable).

Loads `adapters/<concept>/` (and, in incremental mode, the earlier concepts' adapters) onto the
session's model with PEFT; the base model is the same object under `disable_adapter()`, never a copy. Base scores come from `baseline/answers.jsonl`.
Writes `eval/metrics.json` (after every metric), `eval/generations.jsonl`, `eval/*.png`.
"""
from __future__ import annotations

from pathlib import Path

from agmask.errors import StageError
from agmask.evaluate.config import PRESETS as EVAL_PRESETS
from agmask.evaluate.config import EvalConfig
from agmask.files import read_jsonl

NAME = "evaluate"
DIR = "eval"
DEPENDS: tuple[str, ...] = ("baseline", "unlearn")
SCORES_ANSWERS = True  # its outputs hold answer scores (agmask.scoring.SCORING_VERSION is in its input hash)
PARALLEL = True  # several processes: per-item scoring and generation are split over them (evaluate.context)
RESUMABLE = True  # an interrupted evaluation continues metric by metric (eval/metrics.json)
Config = EvalConfig
PRESETS = EVAL_PRESETS


def run(cfg, run_dir: Path, session) -> None:
    from agmask.evaluate import evaluate_model
    from agmask.pipeline import input_hash

    conf: EvalConfig = session.stage_config(NAME)
    run_dir = Path(run_dir)
    path = session.adapter_dir
    if not (path / "adapter_config.json").is_file():
        raise StageError(f"no adapter in {path} (adapter_config.json missing): run `agmask unlearn` first")
    answers = session.paths.baseline_answers
    if not answers.is_file():
        raise StageError(f"{answers} is missing: run `agmask baseline` first")
    _, tokenizer, info = session.model()
    adapter = session.adapted_model()  # LoRA layers injected into the session's model (+ earlier concepts')
    adapted = adapter.model.eval()
    try:
        evaluate_model(adapted, tokenizer, session.spec, conf, run_dir / DIR, baseline_rows=read_jsonl(answers),
                       baseline_generation_tokens=session.stage_config("baseline").generation_tokens,
                       input_hash=input_hash(session, NAME), resume=not cfg.force, reporter=session.reporter,
                       header={"model": info.spec, "model_sha256": info.sha256,
                               "adapter_dir": str(path.relative_to(run_dir))}, adapter=adapter)
    finally:
        session.drop_adapters(adapted)  # remove the LoRA layers again: the session's model is the plain base
