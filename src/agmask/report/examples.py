"""Before / after example replies: a few base-known forget prompts, neighbours and retain answers.

Reads `eval/generations.jsonl`, and `baseline/answers.jsonl` (when current) for which forget prompts the
base model knows (first-token rank <= BASE_KNOWN_RANK, as everywhere else).
"""
from __future__ import annotations

from pathlib import Path

from agmask.evaluate.tables import Reply, Table
from agmask.files import read_jsonl
from agmask.report.parts import Body
from agmask.scoring import BASE_KNOWN_RANK

PER_GROUP = 4
HEADER = ("prompt", "answer", "base reply", "unlearned reply", "answer log-prob: base", "unlearned")


def _rows(rows: list[dict]) -> list[list]:
    return [[r["prompt"] + (f" [{r['lead']}…]" if r["lead"] else ""), r["answer"], Reply(r["base"], r["base_hit"]),
             Reply(r["adapted"], r["adapted_hit"]), r.get("base_logprob"), r.get("adapted_logprob")] for r in rows]


def example_tables(generations: list[dict], base_ranks: dict[int, int] | None) -> list[Table]:
    """`base_ranks`: forget_eval index -> the base model's first-token rank (None: unknown)."""
    def group(set_name: str, mode: str) -> list[dict]:
        return [r for r in generations if r["set"] == set_name and r["mode"] == mode]

    forget = group("forget_eval", "lead")
    known = [r for r in forget if base_ranks is not None and base_ranks.get(r["index"], BASE_KNOWN_RANK + 1)
             <= BASE_KNOWN_RANK]
    if known:
        title, note = "Forget prompts the base model knows", f"forget_eval prompts with base first-token rank <= {BASE_KNOWN_RANK}."
    else:
        title = "Forget prompts"
        note = ("No forget_eval prompt is base-known here (first-token rank <= " f"{BASE_KNOWN_RANK}): the first ones."
                if base_ranks is not None else "The baseline is not current: which prompts are base-known is unknown.")
    neighbours = group("neighbors", "lead")
    neighbours = [r for r in neighbours if r.get("family") == "unseen"] + [r for r in neighbours
                                                                         if r.get("family") != "unseen"]
    return [Table(title, HEADER, _rows((known or forget)[:PER_GROUP]), note),
            Table("Neighbours (unseen first)", HEADER, _rows(neighbours[:PER_GROUP]),
                  "Related knowledge that must survive; unseen: the answer is in no training set."),
            Table("General questions (free reply)", HEADER, _rows(group("retain_eval", "free")[:PER_GROUP]))]


def examples_body(run_dir: Path, dirs: tuple[str, ...]) -> Body:
    """`dirs`: which of eval/ and baseline/ are current (nothing without eval/)."""
    path = run_dir / "eval" / "generations.jsonl"
    if "eval" not in dirs or not path.is_file():
        return Body()
    answers = run_dir / "baseline" / "answers.jsonl"
    ranks = ({r["index"]: r["first_token_rank"] for r in read_jsonl(answers) if r["set"] == "forget_eval"}
             if "baseline" in dirs and answers.is_file() else None)
    return Body(intro=["Greedy replies of the base and the unlearned model ([answer]: the reply contains the answer); "
                       "every reply is in the evaluation section."], tables=example_tables(read_jsonl(path), ranks))
