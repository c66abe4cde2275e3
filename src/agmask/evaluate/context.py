"""What every metric reads: the adapted model (the base is the same object under `disable_adapter()`),
the concept, the options, and memoised per-set scores and generations shared between metrics.

Base scores come from `baseline/answers.jsonl` when the stage has them (same scoring function, same
prompt), so the base model is only run for what the baseline did not compute.

Several processes: every process runs every metric; per-item work (scores, generations, residuals)
is split over the processes with `distributed.map_sharded` and gathered back in item order.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import torch
import torch.nn as nn

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.distributed import map_sharded
from agmask.errors import StageError
from agmask.evaluate.config import EVAL_QA_SETS, EvalConfig
from agmask.evaluate.internals import last_token_resid
from agmask.evaluate.intervals import interval, ratio_interval
from agmask.progress import SILENT, Reporter
from agmask.scoring import BASE_KNOWN_RANK, PrefixKV, generate, prefix_for, render_prompt, score_items, select_items

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

    def items(self, set_name: str) -> list[tuple[int, PromptItem]]:
        if set_name not in EVAL_QA_SETS:
            raise StageError(f"{set_name} is not an evaluation set ({', '.join(EVAL_QA_SETS)})")
        return select_items(self.spec.items(set_name), self.config.max_items)

    def _baseline_rows(self, set_name: str, pairs: list[tuple[int, PromptItem]]) -> list[dict] | None:
        rows = [self.baseline.get((set_name, i)) for i, _ in pairs]
        if all(r is not None and r["prompt"] == it.prompt for r, (_, it) in zip(rows, pairs)):
            return [dict(r) for r in rows]
        return None

    def scores(self, set_name: str, which: Which, kv: PrefixKV | None = None) -> list[dict]:
        """Per-item score rows (answer log-prob, first-token rank, multiple-choice view), `index` = set index.

        kv: keep the scored prefixes' keys there for the greedy replies after the lead (see `generations`).
        """
        key = ("scores", set_name, which)
        if key not in self._memo:
            pairs = self.items(set_name)
            rows = self._baseline_rows(set_name, pairs) if which == "base" else None
            if rows is None:
                with self.use(which) as model:
                    scored = map_sharded(lambda its: score_items(model, self.tokenizer, self.spec, set_name, its,
                                                                 reporter=self.reporter, kv=kv),
                                         [it for _, it in pairs])
                rows = [dict(r.to_dict(), index=i) for r, (i, _) in zip(scored, pairs)]
            for r in rows:  # generations and hits live in generations(), made with the eval settings
                r.pop("generation", None)
                r.pop("hit", None)
            self._memo[key] = rows
        return self._memo[key]

    def base_known(self, set_name: str) -> set[int]:
        """Set indices the base model knows (base first-token rank <= BASE_KNOWN_RANK)."""
        return {r["index"] for r in self.scores(set_name, "base") if r["first_token_rank"] <= BASE_KNOWN_RANK}

    def prefix(self, set_name: str, item: PromptItem, mode: Mode) -> str:
        return prefix_for(self.tokenizer, self.spec, set_name, item) if mode == "lead" \
            else render_prompt(self.tokenizer, item.prompt)

    def generations(self, set_name: str, which: Which, mode: Mode = "lead") -> list[str]:
        """Greedy replies of the selected items, aligned with `items(set_name)`."""
        key = ("gen", set_name, which, mode)
        if key not in self._memo:
            self.prefetch_generations([(set_name, mode)], (which,))
        return self._memo[key]

    def prefetch_generations(self, plan: list[tuple[str, Mode]], variants: tuple[Which, ...] = ("base", "adapted")) -> None:
        """Compute the greedy replies of every (set, mode) of `plan` not known yet: one batched generation per
        model variant and mode over all those sets (a decoding step reads every weight once per batch, so a
        batch of many prompts costs about what a batch of a few does).

        After the lead the prompts are the scored ones: they are scored first (every metric that reads these
        replies reads the scores too) and the replies start from the scored prefixes' keys.
        """
        for which in variants:
            for mode in ("lead", "free"):
                todo = [s for s, m in dict.fromkeys(plan) if m == mode and ("gen", s, which, m) not in self._memo
                        and not self._reuse_baseline_generations(s, which, m)]
                if todo:
                    self._generate(todo, which, mode)

    def _reuse_baseline_generations(self, set_name: str, which: Which, mode: Mode) -> bool:
        """The base replies after the lead come from baseline/answers.jsonl when the lengths agree."""
        if not (which == "base" and mode == "lead" and self.baseline_generation_tokens == self.config.generation_tokens):
            return False
        rows = self._baseline_rows(set_name, self.items(set_name))
        if rows is None or any(r.get("generation") is None for r in rows):
            return False
        self._memo[("gen", set_name, which, mode)] = [r["generation"] for r in rows]
        return True

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
            if [(r["index"], r["prompt"]) for r in group] != [(i, it.prompt) for i, it in self.items(set_name)]:
                continue
            for which in ("base", "adapted"):
                if ("gen", set_name, which, mode) not in self._memo:
                    self._memo[("gen", set_name, which, mode)] = [r[which] for r in group]
                    taken += 1
        return taken

    def _generate(self, sets: list[str], which: Which, mode: Mode) -> None:
        kv = PrefixKV() if mode == "lead" else None
        for set_name in sets:
            if kv is not None and ("scores", set_name, which) not in self._memo:
                self.scores(set_name, which, kv=kv)
        prefixes = [self.prefix(s, it, mode) for s in sets for _, it in self.items(s)]
        tokens = self.config.generation_tokens if mode == "lead" else self.config.free_generation_tokens
        with self.use(which) as model, self.reporter.task(
                f"generating {', '.join(sets)} ({which}, {mode})", len(prefixes)) as advance:
            gens = map_sharded(lambda ps: generate(model, self.tokenizer, ps, max_new_tokens=tokens,
                                                   batch_size=self.config.generation_batch_size, on_batch=advance,
                                                   kv=kv), prefixes)
        lo = 0
        for set_name in sets:
            n = len(self.items(set_name))
            self._memo[("gen", set_name, which, mode)] = [g[0] for g in gens[lo : lo + n]]
            lo += n

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
                rows = map_sharded(lambda part: list(last_token_resid(model, part, pad, self.config.batch_size)), ids)
                self._memo[key] = torch.stack(rows)
        return self._memo[key]
