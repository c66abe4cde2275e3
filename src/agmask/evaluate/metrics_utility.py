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
from agmask.evaluate.summaries import concept_wins, set_table
from agmask.evaluate.tables import Reply, Table, ci, fmt
from agmask.evaluate.text import fluency_stats, is_degenerate
from agmask.files import sha256_text
from agmask.scoring import answer_hit
from agmask.scoring.encode import tokens

CORPUS = "general_corpus.txt"
UTILITY = ("Utility", ("measure", "base", "unlearned"))  # one table, rows from several metrics


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


def locality_headline(loc: dict) -> list[tuple[str, str]]:
    if not loc.get("n"):
        return []
    top1, intervals = loc.get("mc_top1_count"), loc.get("intervals") or {}
    text = f"neighbors (n={loc['n']}) mean |change in answer log-prob| " \
           f"{fmt(loc['mean_abs_delta_answer_logprob'])}{ci(intervals.get('mean_abs_delta_answer_logprob'))} nats " \
           f"(mean change {fmt(loc['mean_delta_answer_logprob'], '+.2f')})"
    if top1:
        text += f", MC top-1 {top1['base']} -> {top1['adapted']} of {loc['base']['mc_n']}"
    wins, rest = loc.get("mc_top_is_concept"), loc.get("mc_top1_count_base_not_concept")
    if wins and rest:
        text += f" (the concept is the pick {wins['base']} -> {wins['adapted']}; top-1 where the base did not pick it " \
                f"{rest['base']} -> {rest['adapted']} of {rest['n']})"
    parts = [f"{status} (n={loc[status]['n']}) {fmt(loc[status].get('mean_abs_delta_answer_logprob'))}"
             f"{ci(intervals.get(f'{status}.mean_abs_delta_answer_logprob'))}"
             for status in NEIGHBOR_STATUSES if (loc.get(status) or {}).get("n")]
    if parts:  # the answer appears in a training set (anchored) or in none (unseen: the locality that counts)
        text += "; mean |change| " + ", ".join(parts)
    return [("locality", text)]


MOST_MOVED = 5  # neighbours listed by how far their answer moved


def most_moved(base: list[dict], adapted: list[dict], status: dict[int, str], n: int = MOST_MOVED) -> list[dict]:
    """The `n` neighbours whose answer log-prob moved furthest (either way), largest first: where locality
    is lost, by prompt, so a reader can see whether one answer or many carry the mean."""
    rows = [{"prompt": b["prompt"], "answer": b["answer"], "status": status[b["index"]],
             "base": b["answer_logprob"], "adapted": a["answer_logprob"],
             "change": a["answer_logprob"] - b["answer_logprob"]} for b, a in zip(base, adapted)]
    return sorted(rows, key=lambda r: -abs(r["change"]))[:n]


def locality_tables(loc: dict) -> list[Table]:
    tables = [set_table(loc, NEIGHBOR_STATUSES)]  # all neighbours, then anchored and unseen
    if loc.get("most_moved"):
        tables.append(Table("Neighbours that moved most", ("answer", "status", "base", "unlearned", "change", "prompt"),
                            [[r["answer"], r["status"], r["base"], r["adapted"], r["change"], r["prompt"]]
                             for r in loc["most_moved"]],
                            note="answer log-prob in nats, largest |change| first"))
    return tables


@metric("locality", "locality", report=locality_tables, headline=locality_headline)
def locality(ctx: EvalContext) -> dict:
    """Neighbours, all and split into anchored (answer in a training set) and unseen (in none): mean |change in
    answer log-prob|, MC top-1 count, greedy hits; how often the concept is the pick, the top-1 count where
    the base did not pick it."""
    out = _neighbours(ctx)
    split = ctx.spec.neighbor_split()
    base, adapted = ctx.scores("neighbors", "base"), ctx.scores("neighbors", "adapted")
    deltas = {r["index"]: abs(a["answer_logprob"] - r["answer_logprob"]) for r, a in zip(base, adapted)}
    intervals = {"mean_abs_delta_answer_logprob": ctx.interval(list(deltas.values()))}
    for status in NEIGHBOR_STATUSES:  # the unseen part is the locality that counts
        keep = set(split[status])
        out[status] = _neighbours(ctx, keep)
        intervals[f"{status}.mean_abs_delta_answer_logprob"] = ctx.interval([d for i, d in deltas.items() if i in keep])
    status = {i: s for s in NEIGHBOR_STATUSES for i in split[s]}
    return {**out, "intervals": intervals, "most_moved": most_moved(base, adapted, status)}


def retain_tables(v: dict) -> list[Table]:
    return [set_table(v), Table(*UTILITY, [["retain_eval accuracy (greedy hit)",
                                            *[v["accuracy"][w] for w in ("base", "adapted")]]])]


def retain_headline(v: dict) -> list[tuple[str, str]]:
    if not v.get("n"):
        return []
    return [("utility", f"retain_eval accuracy {fmt(v['accuracy']['base'])} -> {fmt(v['accuracy']['adapted'])}")]


@metric("retain_utility", "utility", report=retain_tables, headline=retain_headline)
def retain_utility(ctx: EvalContext) -> dict:
    """General questions: accuracy (greedy hit on every item) and the answer scores, base vs adapted."""
    out = set_comparison(ctx, "retain_eval")
    pairs = ctx.items("retain_eval")
    acc = {}
    for which in ("base", "adapted"):
        gens = ctx.generations("retain_eval", which)
        acc[which] = statistics.fmean(answer_hit(g, ctx.spec.answers_for(it)) for g, (_, it) in zip(gens, pairs))
    return {**out, "accuracy": acc}


def kl_tables(v: dict) -> list[Table]:
    return [Table(*UTILITY, [[f"{set_name}: KL per token on the base greedy reply ({kl['tokens']} tokens)", None,
                              kl["mean_kl_per_token"]] for set_name, kl in (v.get("sets") or {}).items()])]


def kl_headline(v: dict) -> list[tuple[str, str]]:
    kl = (v.get("sets") or {}).get("retain_eval")
    if not kl:
        return []
    interval = (v.get("intervals") or {}).get("sets.retain_eval.mean_kl_per_token")
    return [("utility", f"KL/token {fmt(kl['mean_kl_per_token'], '.4f')}{ci(interval, '.4f')}")]


@metric("kl_greedy", "utility", report=kl_tables, headline=kl_headline)
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
                chunk = slice(lo, lo + ctx.config.batch_size)
                lps = {}
                for which in ("base", "adapted"):
                    with ctx.use(which) as model:
                        lps[which], where = answer_position_logprobs(model, ctx.tokenizer, prefixes[chunk],
                                                                     replies[chunk], ctx.kv(which).lookup_only())
                out.append((kl_per_position(lps["base"], lps["adapted"]), where + lo))
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


def general_text_tables(g: dict) -> list[Table]:
    return [Table(*UTILITY, [[f"general text perplexity ({g['tokens_scored']} tokens)", g["base_perplexity"],
                              g["adapted_perplexity"]],
                             ["general text KL(base || unlearned) per token", None, g["mean_kl_per_token"]]])]


def general_text_headline(g: dict) -> list[tuple[str, str]]:
    return [("utility", f"general text perplexity {fmt(g['base_perplexity'])} -> {fmt(g['adapted_perplexity'])}, "
                        f"KL/token {fmt(g['mean_kl_per_token'], '.4f')} ({g['tokens_scored']} tokens)")]


@metric("general_text", "utility", report=general_text_tables, headline=general_text_headline)
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


FLUENCY_KEYS = ("distinct_1", "distinct_2", "repetition_rate", "degenerate_rate")


def fluency_tables(flu: dict) -> list[Table]:
    rows = [[group, sides["adapted"].get("n"), *[sides[w].get(k) for k in FLUENCY_KEYS for w in ("base", "adapted")]]
            for group, sides in {**flu["sets"], "all replies": flu["overall"]}.items()]
    header = ("replies", "n", *[f"{k}: {w}" for k in FLUENCY_KEYS for w in ("base", "unlearned")])
    return [Table("Fluency", header, rows),
            Table("Degenerate replies of the unlearned model", ("reply",),
                  [[Reply(t)] for t in flu.get("degenerate_examples") or []])]


def fluency_headline(flu: dict) -> list[tuple[str, str]]:
    overall = flu.get("overall")
    if not overall or not overall.get("adapted", {}).get("n"):
        return []
    b, a = overall["base"], overall["adapted"]
    return [("fluency", f"distinct-2 {fmt(b.get('distinct_2'))} -> {fmt(a.get('distinct_2'))}, "
                        f"repetition {fmt(b['repetition_rate'])} -> {fmt(a['repetition_rate'])}, "
                        f"degenerate {fmt(b['degenerate_rate'])} -> {fmt(a['degenerate_rate'])} of {a['n']} replies")]


@metric("fluency", "fluency", report=fluency_tables, headline=fluency_headline)
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
