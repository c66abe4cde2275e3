"""Scoring an answer: one implementation used by every stage (DESIGN.md, "Scoring an answer").

- answer log-prob: summed over the answer tokens after the set's lead; max over aliases
- first-token rank: rank of the answer's first distinguishing token (its first token unless another known answer
  starts with the same tokens: `scoring.distinct`) in its next-token distribution (min over aliases)
- multiple-choice view: softmax over the candidates' answer log-probs -> share, rank, top-1
- greedy hit: the answer appears in the greedy generation (only meaningful on base-known prompts)
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.progress import SILENT, Reporter
from agmask.scoring.continuation import score_continuations
from agmask.scoring.distinct import distinguishing_offset, others_than
from agmask.scoring.encode import closing_for, collate_answers, encode_answer, render_prompt, tokens
from agmask.scoring.generate import generate
from agmask.scoring.kvcache import PrefixKV
from agmask.scoring.logprobs import answer_logprobs, token_logprobs

__all__ = ["ItemScore", "score_items", "score_item_and_candidates", "candidate_logprobs", "item_logprobs", "select_items", "summarize", "render_prompt", "encode_answer", "collate_answers",
           "answer_logprobs", "token_logprobs", "generate", "prefix_for", "answer_hit", "BASE_KNOWN_RANK",
           "QA_SETS", "PrefixKV"]

BASE_KNOWN_RANK = 5  # base first-token rank <= 5: the base model "knows" this prompt
QA_SETS = ("forget_train", "forget_eval", "probes", "neighbors", "retain_train", "retain_eval")  # relearn is text


@dataclass
class ItemScore:
    set: str
    index: int
    prompt: str
    answer: str
    answer_logprob: float
    first_token_rank: int
    mc_share: float | None = None  # the item answer's softmax share among the candidates
    mc_rank: int | None = None
    mc_top1: bool | None = None
    mc_top: str | None = None  # the candidate with the highest log-prob
    generation: str | None = None
    hit: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def select_items(items: list[PromptItem], k: int) -> list[tuple[int, PromptItem]]:
    """k items spread over families (round robin: each family gets its turn until k are chosen), and
    evenly spaced within a family; all when k is 0.

    A set without families is sampled at even spacing, so a subset still covers the whole list.
    Returns (index in the set, item) pairs in set order.
    """
    indexed = list(enumerate(items))
    if not k or k >= len(items):
        return indexed
    groups: dict[str | None, list[tuple[int, PromptItem]]] = {}
    for pair in indexed:
        groups.setdefault(pair[1].family, []).append(pair)
    if len(groups) == 1:
        return [indexed[round(i * len(items) / k)] for i in range(k)]
    counts = {name: 0 for name in groups}
    while sum(counts.values()) < k:
        for name, group in groups.items():
            if counts[name] < len(group) and sum(counts.values()) < k:
                counts[name] += 1
    chosen = [group[round(i * len(group) / counts[name])] for name, group in groups.items() for i in range(counts[name])]
    return sorted(chosen, key=lambda p: p[0])


def prefix_for(tokenizer, concept: ConceptSpec, set_name: str, item: PromptItem | str) -> str:
    """Chat-rendered prompt + answer lead (the item's own lead when it has one, else the set's)."""
    prompt = item.prompt if isinstance(item, PromptItem) else item
    return render_prompt(tokenizer, prompt) + concept.lead_for(set_name, item)


def answer_hit(generation: str, aliases: list[str]) -> bool:
    text = generation.casefold()
    return any(a.casefold() in text for a in aliases)


def _mc_candidates(concept: ConceptSpec, aliases: list[str]) -> list[str] | None:
    """The candidate list if the item's answer is one of them, else None (no multiple-choice view)."""
    folded = {c.casefold() for c in concept.candidates}
    return list(concept.candidates) if any(a.casefold() in folded for a in aliases) else None


def _item_continuations(model: nn.Module, tokenizer, concept: ConceptSpec, set_name: str, item: PromptItem,
                        kv: PrefixKV | None) -> tuple[list[str], str, dict, list[str] | None, list[float] | None]:
    """One forward over the item's aliases and candidates after its lead.

    Returns (aliases, best alias, text -> ContinuationScore, candidates or None, candidate log-probs or None);
    a candidate that is one of the item's aliases counts with the best alias's log-prob.
    """
    prefix = prefix_for(tokenizer, concept, set_name, item)
    aliases = concept.answers_for(item)
    candidates = _mc_candidates(concept, aliases)
    lead = concept.lead_for(set_name, item)
    close = closing_for(lead)
    texts = list(dict.fromkeys(aliases + (candidates or [])))  # dedup, keep order
    rank_at = [distinguishing_offset(tokenizer, lead, t, others_than(concept, t), close) if t in aliases else 0
               for t in texts]  # only the aliases' ranks are read
    scores = dict(zip(texts, score_continuations(model, tokenizer, prefix, [t + close for t in texts],
                                                 prefix_ids=tokens(tokenizer, prefix), kv=kv, rank_at=rank_at,
                                                 close=close)))
    best = max(aliases, key=lambda a: scores[a].logprob)
    cand_lp = None
    if candidates:
        alias_set = {a.casefold() for a in aliases}
        cand_lp = [scores[best].logprob if c.casefold() in alias_set else scores[c].logprob for c in candidates]
    return aliases, best, scores, candidates, cand_lp


def score_item(model: nn.Module, tokenizer, concept: ConceptSpec, set_name: str, index: int,
               item: PromptItem, kv: PrefixKV | None = None) -> ItemScore:
    return score_item_and_candidates(model, tokenizer, concept, set_name, index, item, kv)[0]


def score_item_and_candidates(model: nn.Module, tokenizer, concept: ConceptSpec, set_name: str, index: int,
                              item: PromptItem, kv: PrefixKV | None = None) -> tuple[ItemScore, list[float] | None]:
    """`score_item`'s row and, from the same forward, `candidate_logprobs` (None without a multiple-choice view)."""
    aliases, best, scores, candidates, cand_lp = _item_continuations(model, tokenizer, concept, set_name, item, kv)
    row = ItemScore(set_name, index, item.prompt, aliases[0], scores[best].logprob,
                    min(scores[a].first_rank for a in aliases))
    if candidates:
        alias_set = {a.casefold() for a in aliases}
        target = next(i for i, c in enumerate(candidates) if c.casefold() in alias_set)
        m = max(cand_lp)
        z = sum(math.exp(v - m) for v in cand_lp)
        row.mc_share = math.exp(cand_lp[target] - m) / z
        row.mc_rank = 1 + sum(v > cand_lp[target] for v in cand_lp)
        row.mc_top1 = row.mc_rank == 1
        row.mc_top = candidates[max(range(len(candidates)), key=lambda i: cand_lp[i])]
    return row, cand_lp


def candidate_logprobs(model: nn.Module, tokenizer, concept: ConceptSpec, set_name: str, item: PromptItem,
                       kv: PrefixKV | None = None) -> list[float] | None:
    """Answer log-prob of each of `concept.candidates` after the item's lead (the multiple-choice view's
    inputs: their softmax is the candidate distribution, whose entry for the item's answer is `mc_share`);
    None when the item's answer is not a candidate."""
    return _item_continuations(model, tokenizer, concept, set_name, item, kv)[4]


def score_items(model: nn.Module, tokenizer, concept: ConceptSpec, set_name: str, items: list[PromptItem] | None = None,
                generation_tokens: int = 0, batch_size: int = 8, reporter: Reporter = SILENT,
                kv: PrefixKV | None = None) -> list[ItemScore]:
    """Score every item of a set; with `generation_tokens > 0` also the greedy reply after the lead.

    kv: keep each prompt's prefix keys/values there for a later `generate` of the same prompts (with
    `generation_tokens > 0` this happens internally: the reply starts from the scored prefix).
    """
    items = concept.items(set_name) if items is None else items
    if kv is None and generation_tokens > 0:
        kv = PrefixKV()
    rows = []
    with reporter.task(f"scoring {set_name}", len(items)) as advance:
        for i, item in enumerate(items):
            rows.append(score_item(model, tokenizer, concept, set_name, i, item, kv=kv))
            advance(1)
    if generation_tokens > 0:
        prefixes = [prefix_for(tokenizer, concept, set_name, it) for it in items]
        with reporter.task(f"generating {set_name}", len(items)) as advance:
            gens = generate(model, tokenizer, prefixes, max_new_tokens=generation_tokens, batch_size=batch_size,
                            on_batch=advance, kv=kv)
        for row, item, g in zip(rows, items, gens):
            row.generation = g[0]
            row.hit = answer_hit(g[0], concept.answers_for(item))
    return rows


@torch.no_grad()
def item_logprobs(model: nn.Module, tokenizer, concept: ConceptSpec, set_name: str, items: list[PromptItem],
                  batch_size: int = 16) -> torch.Tensor:
    """(N,) answer log-prob per item (max over aliases, closing quote included): the batched path
    without the multiple-choice view, for quick before/after comparisons (ablations, training checks). Like
    `score_items`, it scores the closing quote as every token that closes the answer."""
    pairs = []  # (item index, prefix, answer + closing quote, closing quote) per item and alias
    for i, it in enumerate(items):
        close = closing_for(concept.lead_for(set_name, it))
        pairs += [(i, prefix_for(tokenizer, concept, set_name, it), a + close, close) for a in concept.answers_for(it)]
    device = next(model.parameters()).device
    values = []
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo : lo + batch_size]
        batch = collate_answers(tokenizer, [p for _, p, _, _ in chunk], [a for _, _, a, _ in chunk],
                                [c for *_, c in chunk]).to(device)
        values.append(answer_logprobs(model, batch).float().cpu())
    flat = torch.cat(values)
    out = torch.full((len(items),), float("-inf"))
    for (i, *_), v in zip(pairs, flat):
        out[i] = max(out[i], v)
    return out


def summarize(rows: list[dict], known: set[int] | None = None) -> dict:
    """Per-set summary. `known`: indices of base-known items (default: this run's rank <= 5)."""
    if not rows:
        return {"n": 0}
    known = {r["index"] for r in rows if r["first_token_rank"] <= BASE_KNOWN_RANK} if known is None else known
    mc = [r for r in rows if r.get("mc_share") is not None]
    gen_known = [r for r in rows if r["index"] in known and r.get("hit") is not None]
    return {
        "n": len(rows),
        "mean_answer_logprob": statistics.fmean(r["answer_logprob"] for r in rows),
        "median_first_token_rank": statistics.median(r["first_token_rank"] for r in rows),
        "mc_n": len(mc),
        "mc_share": statistics.fmean(r["mc_share"] for r in mc) if mc else None,
        "mc_top1_rate": statistics.fmean(float(r["mc_top1"]) for r in mc) if mc else None,
        "base_known_n": len(known),
        "greedy_hit_rate_base_known": statistics.fmean(float(r["hit"]) for r in gen_known) if gen_known else None,
    }
