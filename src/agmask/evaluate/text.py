"""Text metrics on generations: facts recalled, ROUGE-L recall, distinct-n, repetition, degeneracy.

Pure functions over strings (no model), so each has a test with a hand-computed answer. Words are
`\\w+` runs, case-folded: punctuation never counts as a word.
"""
from __future__ import annotations

import re
import statistics

_WORD = re.compile(r"\w+", re.UNICODE)
# A unit of 1..40 non-space characters repeated 8+ times in a row ("!!!!!!!!", "abababab...").
_CHAR_LOOP = re.compile(r"(\S{1,40}?)\1{7,}")
DEGENERATE_WORD_REPEATS = 3  # a 1-4 word unit repeated this many times in a row is a loop
DEGENERATE_TARGET_REPEATS = 2  # the forget target said twice ("FORGOTTEN FORGOTTEN") is a failure


def words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def facts_recalled(generation: str, facts: list[str]) -> float | None:
    """Share of `facts` found (case-insensitive substring) in the generation; None without facts."""
    if not facts:
        return None
    text = generation.casefold()
    return sum(f.casefold() in text for f in facts) / len(facts)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence of two word lists (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_recall(generation: str, reference: str) -> float:
    """ROUGE-L recall: LCS(words of reference, words of generation) / number of reference words."""
    ref = words(reference)
    return lcs_length(ref, words(generation)) / len(ref) if ref else 0.0


def facts_rouge_l(generation: str, facts: list[str]) -> float | None:
    """Mean over facts of each fact's ROUGE-L recall against the generation (order of facts does not matter)."""
    if not facts:
        return None
    return statistics.fmean(rouge_l_recall(generation, f) for f in facts)


def ngrams(seq: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float | None:
    """Unique word n-grams / all word n-grams, pooled over the texts (Li et al. 2016); None if no n-grams."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else None


def repetition_rate(text: str, n: int = 2) -> float:
    """Share of a text's word n-grams that repeat an earlier n-gram of the same text (0 = no repeats)."""
    grams = ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def _word_loop(ws: list[str], repeats: int) -> bool:
    for size in range(1, 5):
        for start in range(len(ws) - size * repeats + 1):
            unit = ws[start : start + size]
            if all(ws[start + k * size : start + (k + 1) * size] == unit for k in range(1, repeats)):
                return True
    return False


def is_degenerate(text: str, forget_target: str | None = None) -> bool:
    """A looping or collapsed output: a 1-4 word unit 3x in a row, a character unit 8x in a row, or the
    forget target said twice or more. An empty reply is not degenerate (the model may just stop)."""
    if forget_target and text.casefold().count(forget_target.casefold()) >= DEGENERATE_TARGET_REPEATS:
        return True
    if _CHAR_LOOP.search(text):
        return True
    return _word_loop(words(text), DEGENERATE_WORD_REPEATS)


def fluency_stats(texts: list[str], forget_target: str | None = None) -> dict:
    """distinct-1/2 (pooled), mean repetition rate, share of degenerate texts, mean length in words."""
    if not texts:
        return {"n": 0}
    return {
        "n": len(texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition_rate": statistics.fmean(repetition_rate(t) for t in texts),
        "degenerate_rate": statistics.fmean(float(is_degenerate(t, forget_target)) for t in texts),
        "mean_words": statistics.fmean(len(words(t)) for t in texts),
    }
