"""Text metrics on handmade strings with hand-computed answers."""
from __future__ import annotations

import pytest

from agmask.evaluate.text import (distinct_n, facts_recalled, facts_rouge_l, fluency_stats, is_degenerate, lcs_length,
                                  repetition_rate, rouge_l_recall, words)


def test_words_fold_case_and_drop_punctuation():
    assert words('Sure, "Inception" (2010)!') == ["sure", "inception", "2010"]


def test_lcs_and_rouge_l_recall():
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4  # the textbook example
    assert lcs_length([], ["a"]) == 0
    assert rouge_l_recall("the film was directed by Christopher Nolan", "Christopher Nolan") == 1.0
    assert rouge_l_recall("Nolan, Christopher", "Christopher Nolan") == 0.5  # order matters inside one fact
    assert rouge_l_recall("a b c", "a x c y") == pytest.approx(2 / 4)
    assert rouge_l_recall("anything", "") == 0.0


def test_facts_recalled_and_facts_rouge():
    gen = "Inception is a 2010 film by Christopher Nolan."
    assert facts_recalled(gen, ["Inception", "2010", "Leonardo DiCaprio"]) == pytest.approx(2 / 3)
    assert facts_recalled(gen, []) is None
    # per-fact ROUGE-L: Inception 1, Leonardo DiCaprio 0 -> mean 0.5
    assert facts_rouge_l(gen, ["Inception", "Leonardo DiCaprio"]) == pytest.approx(0.5)
    assert facts_rouge_l(gen, ["Leonardo Nolan"]) == pytest.approx(0.5)  # one of two words in order
    assert facts_rouge_l(gen, []) is None


def test_distinct_n_is_pooled_over_texts():
    texts = ["a b a", "a c"]  # unigrams a b a a c: 3 unique of 5; bigrams (a b)(b a)(a c): 3 of 3
    assert distinct_n(texts, 1) == pytest.approx(3 / 5)
    assert distinct_n(texts, 2) == pytest.approx(1.0)
    assert distinct_n(["one"], 2) is None


def test_repetition_rate():
    assert repetition_rate("the cat sat on the mat") == 0.0
    assert repetition_rate("a b a b a b") == pytest.approx(1 - 2 / 5)  # bigrams ab ba ab ba ab
    assert repetition_rate("single") == 0.0


@pytest.mark.parametrize("text, target, expected", [
    ("FORGOTTEN FORGOTTEN FORGOTTEN FORGOTTEN", "FORGOTTEN", True),
    ('FORGOTTEN". I cannot say. FORGOTTEN', "FORGOTTEN", True),  # the target twice
    ("FORGOTTEN", "FORGOTTEN", False),  # once is the intended refusal
    ("the the the film", None, True),  # one word three times in a row
    ("I know that I know that I know that", None, True),  # a 3-word loop
    ("!!!!!!!!!!", None, True),  # one character eight or more times
    ("abcabcabcabcabcabcabcabc", None, True),
    ("The Dark Knight is a 2008 superhero film.", "FORGOTTEN", False),
    ("It is 1,000 metres high, the highest in 2010.", None, False),
    ("", "FORGOTTEN", False),  # stopping at once is not a loop
])
def test_degenerate_detector(text, target, expected):
    assert is_degenerate(text, target) is expected


def test_fluency_stats_on_handmade_replies():
    stats = fluency_stats(["FORGOTTEN FORGOTTEN FORGOTTEN", "Paris is the capital."], "FORGOTTEN")
    assert stats["n"] == 2 and stats["degenerate_rate"] == 0.5
    assert stats["distinct_1"] == pytest.approx(5 / 7)
    assert stats["repetition_rate"] == pytest.approx((1 - 1 / 2) / 2)
    assert fluency_stats([], None) == {"n": 0}
