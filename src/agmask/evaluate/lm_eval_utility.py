"""Standard utility benchmarks with lm-evaluation-harness, on the base and the adapted model.

`evaluate.lm_eval_tasks` (default empty: skipped) names tasks that `lm_eval` knows (MMLU, ARC,
TriviaQA, ... on a machine that has their data) or tasks described by YAML files in
`evaluate.lm_eval_include_path` (e.g. a local JSON file: nothing is downloaded then). Both sides are
`lm_eval.models.huggingface.HFLM` around the same objects the other metrics use: the adapted model,
and the same model under `disable_adapter()` for the base. Each task's metrics are reported side by
side with their standard errors.
"""
from __future__ import annotations

import logging

from agmask.errors import StageError
from agmask.evaluate.context import EvalContext
from agmask.evaluate.registry import metric
from agmask.evaluate.tables import Table

SEED = 1234  # lm-eval's own default seeds, fixed here so every run samples few-shot examples alike


def _task_metrics(results: dict) -> dict[str, dict]:
    """lm-eval's `results` ({task: {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}}) as
    {task: {"acc,none": (value, stderr)}} for the numeric metrics."""
    out = {}
    for task, values in results.items():
        out[task] = {}
        for key, value in values.items():
            name, comma, filt = key.partition(",")  # metric keys are "<metric>,<filter>"; others are bookkeeping
            if not comma or name.endswith("_stderr") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            stderr = values.get(f"{name}_stderr,{filt}")
            out[task][key] = (float(value), float(stderr) if isinstance(stderr, (int, float)) else None)
    return out


def lm_eval_tables(v: dict) -> list[Table]:
    rows = [[task, name, vals.get("base"), vals.get("adapted"), vals.get("base_stderr"), vals.get("adapted_stderr")]
            for task, metrics in (v.get("tasks") or {}).items() for name, vals in metrics.items()]
    return [Table("lm-evaluation-harness", ("task", "metric", "base", "unlearned", "base stderr", "unlearned stderr"),
                  rows)]


@metric("lm_eval", "utility", report=lm_eval_tables)
def lm_eval_utility(ctx: EvalContext) -> dict:
    """lm-evaluation-harness tasks (evaluate.lm_eval_tasks) on the base and the adapted model, side by side."""
    tasks = list(ctx.config.lm_eval_tasks)
    if not tasks:
        return {"skipped": "no task (evaluate.lm_eval_tasks is empty)", "tasks": {}}
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise StageError(f"evaluate.lm_eval_tasks needs lm-evaluation-harness ({e}): pip install 'agmask[lmeval]'") from e
    logging.getLogger("lm-eval").setLevel(logging.WARNING)  # its per-request INFO lines would flood the run log
    manager = None
    if ctx.config.lm_eval_include_path:  # local tasks only when they are all there: indexing lm-eval's own is slow
        local = TaskManager(include_path=ctx.config.lm_eval_include_path, include_defaults=False)
        manager = local if all(t in local.all_tasks for t in tasks) else None
    manager = manager or TaskManager(include_path=ctx.config.lm_eval_include_path or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" or in {ctx.config.lm_eval_include_path}" if ctx.config.lm_eval_include_path else ""
        raise StageError(f"unknown lm-eval task(s) {', '.join(unknown)}: not in lm-eval's task list{where} "
                         "(set evaluate.lm_eval_include_path to a directory of task YAML files)")
    per_side = {}
    for which in ("base", "adapted"):
        with ctx.use(which) as model:
            lm = HFLM(pretrained=model, tokenizer=ctx.tokenizer, batch_size=ctx.config.lm_eval_batch_size)
            out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager,
                                          limit=ctx.config.lm_eval_limit or None, log_samples=False,
                                          random_seed=SEED, numpy_random_seed=SEED, torch_random_seed=SEED,
                                          fewshot_random_seed=SEED)
        per_side[which] = _task_metrics(out["results"])
    table = {task: {key: {"base": value, "adapted": per_side["adapted"].get(task, {}).get(key, (None, None))[0],
                          "base_stderr": stderr,
                          "adapted_stderr": per_side["adapted"].get(task, {}).get(key, (None, None))[1]}
                    for key, (value, stderr) in metrics.items()}
             for task, metrics in per_side["base"].items()}
    return {"tasks": table, "limit": ctx.config.lm_eval_limit or None, "lm_eval_version": lm_eval.__version__}
