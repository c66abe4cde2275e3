"""What every metric reads: the adapted model (the base is the same object under `disable_adapter()`),
the concept, the options, and the model work metrics share, each piece done once:

- scores memoised per set and by content (`score_row`: an adversarial prompt that is a forget_eval
  question after its own lead is that question's row), greedy replies memoised by (prefix, length) and
  made in one batched generation per variant (`greedy`);
- one prefix cache per model variant (`kv`): a prompt scored, then answered, KL'd and probed runs its
  prefix once; every prompt reuses the chat template's opening and the questions asked before.

Base scores and the base model's replies after the lead come from `baseline/answers.jsonl` when the
stage has them (same scoring function, same prompt, same length), so the base model is only run for
what the baseline did not compute.

Several processes: every process runs every metric; per-item work (scores, generations, residuals)
is split over the processes with `distributed.map_sharded` and gathered back in item order.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, TypeVar

import torch
import torch.nn as nn

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.distributed import map_sharded
from agmask.errors import StageError
from agmask.evaluate.config import EVAL_QA_SETS, EvalConfig
from agmask.evaluate.internals import last_token_resid
from agmask.evaluate.intervals import interval, ratio_interval
from agmask.progress import SILENT, Reporter
from agmask.scoring import (BASE_KNOWN_RANK, PrefixKV, generate, prefix_for, render_prompt, score_item, score_items,
                            select_items)

T = TypeVar("T")
Which = Literal["base", "adapted"]
Mode = Literal["lead", "free"]  # lead: after the set's answer lead; free: the bare chat prompt


@dataclass
class EvalContext:
    model: nn.Module  # a peft.PeftModel
    tokenizer: object
    spec: ConceptSpec
    config: EvalConfig
    out_dir: Path
    baseline: dict[tuple[str, int], dict] = field(default_factory=dict)  # (set, index) -> baseline row
    baseline_generation_tokens: int | None = None
    reporter: Reporter = SILENT
    adapter: object | None = None  # the MaskedAdapter under test (name, mask, layers), for attacks that train it
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not callable(getattr(self.model, "disable_adapter", None)):
            raise StageError("evaluation needs a PEFT model (peft.PeftModel): the base model is the same "
                             "object under disable_adapter()")
        self.out_dir = Path(self.out_dir)

    @contextmanager
    def use(self, which: Which) -> Iterator[nn.Module]:
        """The model as `which`: with the adapter, or the same weights with the adapter disabled."""
        if which == "base":
            with self.model.disable_adapter():
                yield self.model
        elif which == "adapted":
            yield self.model
        else:
            raise ValueError(f"unknown model variant {which!r}")

    def memo(self, key: tuple, compute: Callable[[], T]) -> T:
        """`compute()` once per evaluation: a value several metrics read (keep `key` unique to what it is)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def items(self, set_name: str) -> list[tuple[int, PromptItem]]:
        if set_name not in EVAL_QA_SETS:
            raise StageError(f"{set_name} is not an evaluation set ({', '.join(EVAL_QA_SETS)})")
        return select_items(self.spec.items(set_name), self.config.max_items)

    def _baseline_rows(self, set_name: str, pairs: list[tuple[int, PromptItem]]) -> list[dict] | None:
        rows = [self.baseline.get((set_name, i)) for i, _ in pairs]
        if all(r is not None and r["prompt"] == it.prompt for r, (_, it) in zip(rows, pairs)):
            return [dict(r) for r in rows]
        return None

    def kv(self, which: Which) -> PrefixKV:
        """The prefix cache of one model variant for the whole evaluation: every forward of `use(which)` that
        passes it runs only what no earlier forward of the variant computed (the chat template's system turn,
        a question asked before with another lead, a prompt scored before it is answered, KL'd, probed).
        Valid while the variant's weights are those of the evaluation: an attack that changes them scores
        the attacked model with a cache of its own."""
        return self.memo(("kv", which), PrefixKV)

    def scores(self, set_name: str, which: Which) -> list[dict]:
        """Per-item score rows (answer log-prob, first-token rank, multiple-choice view), `index` = set index."""
        key = ("scores", set_name, which)
        if key not in self._memo:
            pairs = self.items(set_name)
            rows = self._baseline_rows(set_name, pairs) if which == "base" else None
            if rows is None:
                with self.use(which) as model:
                    scored = map_sharded(lambda its: score_items(model, self.tokenizer, self.spec, set_name, its,
                                                                 reporter=self.reporter, kv=self.kv(which)),
                                         [it for _, it in pairs])
                rows = [dict(r.to_dict(), index=i) for r, (i, _) in zip(scored, pairs)]
            for r, (_, item) in zip(rows, pairs):  # replies and hits live in generations(), with the eval settings
                r.pop("generation", None)
                r.pop("hit", None)
                self._memo.setdefault(self._score_key(which, self.spec, set_name, item), r)
            self._memo[key] = rows
        return self._memo[key]

    def _score_key(self, which: Which, spec: ConceptSpec, set_name: str, item: PromptItem) -> tuple:
        """What a score row depends on besides the model: the prefix, the answers, the candidates."""
        return ("score", which, prefix_for(self.tokenizer, spec, set_name, item), tuple(spec.answers_for(item)),
                tuple(spec.candidates))

    def score_row(self, which: Which, spec: ConceptSpec, set_name: str, item: PromptItem) -> dict:
        """One item's score row under `spec` (a copy of the concept with other leads, say), memoised by what it
        scores: a prompt that `scores` or another metric scored on the same variant is not scored again.
        Call it outside `use` (it enters it itself)."""
        key = self._score_key(which, spec, set_name, item)
        if key not in self._memo:
            with self.use(which) as model:
                row = score_item(model, self.tokenizer, spec, set_name, 0, item, kv=self.kv(which))
                self._memo[key] = row.to_dict()
        return dict(self._memo[key])

    def base_known(self, set_name: str) -> set[int]:
        """Set indices the base model knows (base first-token rank <= BASE_KNOWN_RANK)."""
        return {r["index"] for r in self.scores(set_name, "base") if r["first_token_rank"] <= BASE_KNOWN_RANK}

    def prefix(self, set_name: str, item: PromptItem, mode: Mode) -> str:
        return prefix_for(self.tokenizer, self.spec, set_name, item) if mode == "lead" \
            else render_prompt(self.tokenizer, item.prompt)

    def request(self, set_name: str, item: PromptItem, mode: Mode = "lead") -> tuple[str, int]:
        """(prefix, reply tokens) of an item's greedy reply: after the set's lead, or free (the bare prompt)."""
        tokens = self.config.generation_tokens if mode == "lead" else self.config.free_generation_tokens
        return self.prefix(set_name, item, mode), tokens

    def generations(self, set_name: str, which: Which, mode: Mode = "lead") -> list[str]:
        """Greedy replies of the selected items, aligned with `items(set_name)`."""
        return self.greedy(which, [self.request(set_name, it, mode) for _, it in self.items(set_name)])

    def greedy(self, which: Which, requests: list[tuple[str, int]]) -> list[str]:
        """The greedy reply of each (prefix, tokens) request, memoised by its text: the replies not known yet
        come from ONE batched generation, in request order (a decoding step reads every weight once per batch,
        so a batch of many prompts costs about what a batch of a few does). A batch with several lengths
        decodes to the longest; each reply is cut at its own length (greedy tokens do not depend on later
        ones). The base model's replies after the lead are those of baseline/answers.jsonl when the lengths
        agree, and a resumed evaluation takes those of its eval/generations.jsonl (`reuse_generations`)."""
        self._register_baseline_replies()
        todo = list(dict.fromkeys(r for r in requests if ("reply", which, *r) not in self._memo))
        if todo:
            with self.use(which) as model, self.reporter.task(f"generating ({which})", len(todo)) as advance:
                gens = map_sharded(lambda part: generate(model, self.tokenizer, [p for p, _ in part],
                                                         max_new_tokens=[t for _, t in part],
                                                         batch_size=self.config.generation_batch_size,
                                                         on_batch=advance, kv=self.kv(which)), todo)
            for request, g in zip(todo, gens):
                self._memo[("reply", which, *request)] = g[0]
        return [self._memo[("reply", which, *r)] for r in requests]

    def _register_baseline_replies(self) -> None:
        """The base model's greedy replies of baseline/answers.jsonl, as answers to their (prefix, tokens)."""
        if self._memo.get("baseline_replies") or not self.baseline_generation_tokens:
            return
        self._memo["baseline_replies"] = True
        for set_name in EVAL_QA_SETS:
            pairs = self.items(set_name)
            rows = self._baseline_rows(set_name, pairs)
            for row, (_, item) in zip(rows or [], pairs):
                if row.get("generation") is not None:
                    key = ("reply", "base", self.prefix(set_name, item, "lead"), self.baseline_generation_tokens)
                    self._memo.setdefault(key, row["generation"])

    def reuse_generations(self, rows: list[dict]) -> int:
        """Take the greedy replies of an earlier run with the same inputs (its eval/generations.jsonl rows), so a
        resumed evaluation does not generate them again. A (set, mode) whose rows are not exactly this run's
        selected items, in order, is left to be generated. Returns how many reply lists were taken."""
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in rows:
            groups.setdefault((row["set"], row["mode"]), []).append(row)
        taken = 0
        for (set_name, mode), group in groups.items():
            if set_name not in EVAL_QA_SETS or mode not in ("lead", "free"):
                continue
            pairs = self.items(set_name)
            if [(r["index"], r["prompt"]) for r in group] != [(i, it.prompt) for i, it in pairs]:
                continue
            for which in ("base", "adapted"):
                for r, (_, item) in zip(group, pairs):
                    self._memo.setdefault(("reply", which, *self.request(set_name, item, mode)), r[which])
                taken += 1
        return taken

    def interval(self, values: list[float], statistic: str = "mean") -> dict:
        """Bootstrap 95% interval over prompts with this evaluation's resamples and seed (intervals.py)."""
        return interval(values, statistic, resamples=self.config.bootstrap_resamples, seed=self.config.bootstrap_seed)

    def ratio_interval(self, numerators: list[float], denominators: list[float]) -> dict:
        return ratio_interval(numerators, denominators, resamples=self.config.bootstrap_resamples,
                              seed=self.config.bootstrap_seed)

    def last_resid(self, which: Which, ids: list[list[int]]) -> torch.Tensor:
        """(N, L, H) residual after every layer at each sequence's last token; memoised, so metrics that
        read the same prompts (activation shift, logit lens) run the model once."""
        key = ("resid", which, tuple(tuple(row) for row in ids))
        if key not in self._memo:
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            with self.use(which) as model:
                rows = map_sharded(lambda part: list(last_token_resid(model, part, pad, kv=self.kv(which))), ids)
                self._memo[key] = torch.stack(rows)
        return self._memo[key]
