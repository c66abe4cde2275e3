"""What must survive: neighbours (locality), general questions and text (utility), and fluency."""
from __future__ import annotations

import math
import statistics
from importlib import resources

import torch

from agmask.concepts.schema import NEIGHBOR_STATUSES
from agmask.distributed import map_sharded
from agmask.evaluate.context import EvalContext
from agmask.evaluate.internals import answer_position_logprobs, kl_per_position, window_logprobs
from agmask.evaluate.metrics_forget import generation_plan, set_comparison
from agmask.evaluate.registry import metric
from agmask.evaluate.summaries import concept_wins
from agmask.evaluate.text import fluency_stats, is_degenerate
from agmask.files import sha256_text
from agmask.scoring import answer_hit, collate_answers
from agmask.scoring.encode import tokens

CORPUS = "general_corpus.txt"


def general_corpus() -> str:
    """The shipped general English text (encyclopedic and narrative prose, no films)."""
    return (resources.files("agmask.evaluate") / "data" / CORPUS).read_text(encoding="utf-8")


def _neighbours(ctx: EvalContext, keep: set[int] | None = None) -> dict:
    out = set_comparison(ctx, "neighbors", keep=keep)
    if out.get("n"):
        base, adapted = ctx.scores("neighbors", "base"), ctx.scores("neighbors", "adapted")
        if keep is not None:
            base, adapted = [r for r in base if r["index"] in keep], [r for r in adapted if r["index"] in keep]
        out.update(concept_wins(base, adapted, ctx.spec.answers))
    return out


@metric("locality", "locality")
def locality(ctx: EvalContext) -> dict:
    """Neighbours, all and split into anchored (answer in a training set) and unseen (in none): mean |change in
    answer log-prob|, MC top-1 count, greedy hits; how often the concept is the pick, the top-1 count where
    the base did not pick it."""
    out = _neighbours(ctx)
    split = ctx.spec.neighbor_split()
    deltas = {r["index"]: abs(a["answer_logprob"] - r["answer_logprob"])
              for r, a in zip(ctx.scores("neighbors", "base"), ctx.scores("neighbors", "adapted"))}
    intervals = {"mean_abs_delta_answer_logprob": ctx.interval(list(deltas.values()))}
    for status in NEIGHBOR_STATUSES:  # the unseen part is the locality that counts
        keep = set(split[status])
        out[status] = _neighbours(ctx, keep)
        intervals[f"{status}.mean_abs_delta_answer_logprob"] = ctx.interval([d for i, d in deltas.items() if i in keep])
    return {**out, "intervals": intervals}


@metric("retain_utility", "utility")
def retain_utility(ctx: EvalContext) -> dict:
    """General questions: accuracy (greedy hit on every item) and the answer scores, base vs adapted."""
    out = set_comparison(ctx, "retain_eval")
    pairs = ctx.items("retain_eval")
    acc = {}
    for which in ("base", "adapted"):
        gens = ctx.generations("retain_eval", which)
        acc[which] = statistics.fmean(answer_hit(g, ctx.spec.answers_for(it)) for g, (_, it) in zip(gens, pairs))
    return {**out, "accuracy": acc}


@metric("kl_greedy", "utility")
def kl_greedy(ctx: EvalContext) -> dict:
    """KL(base || adapted) per token at the positions of the base model's own greedy reply, per evaluation set."""
    eos = ctx.tokenizer.eos_token or ""
    sets, intervals = {}, {}
    for set_name in ctx.config.kl_sets:
        pairs = ctx.items(set_name)
        replies = [g if g else eos for g in ctx.generations(set_name, "base")]  # empty reply: the stop token
        prefixes = [ctx.prefix(set_name, it, "lead") for _, it in pairs]

        def batch_kl(starts: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            out = []
            for lo in starts:
                batch = collate_answers(ctx.tokenizer, prefixes[lo : lo + ctx.config.batch_size],
                                        replies[lo : lo + ctx.config.batch_size])
                with ctx.use("base") as model:
                    base_lp, where = answer_position_logprobs(model, batch)
                with ctx.use("adapted") as model:
                    adapted_lp, _ = answer_position_logprobs(model, batch)
                out.append((kl_per_position(base_lp, adapted_lp), where + lo))
            return out

        # several processes: each takes a block of the batches; results come back in batch order
        parts = map_sharded(batch_kl, list(range(0, len(pairs), ctx.config.batch_size)))
        kl, row = torch.cat([k for k, _ in parts]), torch.cat([r for _, r in parts])
        items = [i for i in range(len(pairs)) if (row == i).any()]
        per_item = [float(kl[row == i].mean()) for i in items]
        sets[set_name] = {"tokens": int(kl.numel()), "mean_kl_per_token": float(kl.mean()),
                          "max_item_mean_kl": max(per_item)}
        intervals[f"sets.{set_name}.mean_kl_per_token"] = ctx.ratio_interval(  # pooled over tokens: resample prompts
            [float(kl[row == i].sum()) for i in items], [int((row == i).sum()) for i in items])
    return {"sets": sets, "intervals": intervals}


@metric("general_text", "utility")
def general_text(ctx: EvalContext) -> dict:
    """General English text (shipped corpus): perplexity base vs adapted and KL(base || adapted) per token."""
    text = general_corpus()
    ids = torch.tensor(tokens(ctx.tokenizer, text))
    if ctx.config.corpus_tokens:
        ids = ids[: ctx.config.corpus_tokens]
    w = ctx.config.corpus_window
    windows = [ids[lo : lo + w] for lo in range(0, len(ids), w) if len(ids[lo : lo + w]) > 1]
    nll = {"base": 0.0, "adapted": 0.0}
    kl_sum, n = 0.0, 0

    def window_terms(part: list[torch.Tensor]) -> list[tuple[float, float, float, int]]:
        """(base NLL, adapted NLL, summed KL, tokens) per window."""
        out = []
        for window in part:
            targets = window[1:].unsqueeze(-1)  # (W-1, 1)
            lps = {}
            for which in ("base", "adapted"):
                with ctx.use(which) as model:
                    lps[which] = window_logprobs(model, window)  # (W-1, V)
            out.append((-float(lps["base"].gather(-1, targets).sum()), -float(lps["adapted"].gather(-1, targets).sum()),
                        float(kl_per_position(lps["base"], lps["adapted"]).sum()), len(targets)))
            advance(1)
        return out

    with ctx.reporter.task("general text", len(windows)) as advance:
        for base_nll, adapted_nll, kl, count in map_sharded(window_terms, windows):  # summed in window order
            nll["base"] += base_nll
            nll["adapted"] += adapted_nll
            kl_sum += kl
            n += count
    return {"corpus": CORPUS, "corpus_sha256": sha256_text(text), "tokens_scored": n, "windows": len(windows),
            "base_perplexity": math.exp(nll["base"] / n), "adapted_perplexity": math.exp(nll["adapted"] / n),
            "mean_kl_per_token": kl_sum / n}


@metric("fluency", "fluency")
def fluency(ctx: EvalContext) -> dict:
    """distinct-1/2, repetition rate and degenerate share (loops, the forget target repeated) of the replies."""
    target = ctx.spec.forget_target
    per_set, pooled, examples = {}, {"base": [], "adapted": []}, []
    for set_name, mode in generation_plan(ctx):
        per_set[f"{set_name}.{mode}"] = {}
        for which in ("base", "adapted"):
            gens = ctx.generations(set_name, which, mode)
            per_set[f"{set_name}.{mode}"][which] = fluency_stats(gens, target)
            pooled[which] += gens
            if which == "adapted":
                examples += [g for g in gens if is_degenerate(g, target)]
    return {"sets": per_set, "overall": {w: fluency_stats(g, target) for w, g in pooled.items()},
            "degenerate_examples": examples[:8]}
