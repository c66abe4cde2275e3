"""Answer formats training never used: unseen leads, lettered multiple-choice questions, the metric."""
from __future__ import annotations

import pytest

from agmask.concepts import load_concept
from agmask.evaluate import EvalConfig, evaluate_model
from agmask.evaluate.formats import LETTERS, letter_question, score_letter, unseen_leads
from evalkit import add_adapter, force_answer


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def test_a_lead_training_uses_is_left_out(spec):
    keep, skipped = unseen_leads(spec, ("Answer: ", ' the movie is "', "Answer: ", "Reply: "))
    assert keep == ["Answer: ", "Reply: "]
    assert list(skipped) == [' the movie is "'] and "training" in skipped[' the movie is "']


def test_letter_questions_are_deterministic_and_hold_the_answer_once(spec):
    inception = load_concept("inception").spec
    for s, items in (("forget_eval", spec.forget_eval), ("neighbors", spec.neighbors)):
        for i, it in enumerate(items):
            q = letter_question(spec, s, i, it, 4)
            assert q == letter_question(spec, s, i, it, 4)  # same item, same question
            assert len(set(q.options)) == 4 and q.options[q.correct] == spec.answers_for(it)[0]
            assert all(o in spec.candidates for o in q.options)  # a candidate answer: candidate distractors
            assert q.prompt.startswith(it.prompt + "\n\nA) ") and q.prompt.endswith("\n\nAnswer with the letter.")
    answers = {it.answer for it in inception.retain_eval}
    positions = set()
    for i, it in enumerate(inception.retain_eval):
        q = letter_question(inception, "retain_eval", i, it, 4)
        assert set(q.options) <= answers  # enough answers in the set: distractors of the same kind
        positions.add(q.correct)
    assert positions == {0, 1, 2, 3}  # the answer is not always behind the same letter


def test_score_letter_on_a_model_that_always_says_b(tiny, spec):
    model, tok, _ = tiny
    forced = force_answer(model, tok, "B", starts=("\n",))  # the reply after the chat template starts with B
    for i, it in enumerate(spec.forget_eval):
        q = letter_question(spec, "forget_eval", i, it, 4)
        row = score_letter(forced, tok, q, "forget_eval", i)
        says_b = LETTERS[q.correct] == "B"
        assert row["mc_top1"] == says_b and row["mc_top"] == q.options[1]
        assert row["mc_share"] == pytest.approx(1.0 if says_b else 0.0, abs=1e-3)
        assert (row["answer_logprob"] > -1e-3) == says_b and row["answer"] == LETTERS[q.correct]


def test_the_metric_reports_every_format_and_the_worst(tiny, spec, tmp_path):
    model, tok, _ = tiny
    adapted = add_adapter(force_answer(model, tok, "B", starts=("\n",)), [1], std=0.0)  # base == adapted
    cfg = EvalConfig(metrics=("answer_formats",), unseen_leads=("Answer: ", 'The movie is "'))
    m = evaluate_model(adapted, tok, spec, cfg, tmp_path)["metrics"]["answer_formats"]
    assert list(m["formats"]) == ["set_lead", "lead=Answer: ", "letter"] and list(m["skipped_leads"]) == ['The movie is "']
    concept_items = [("forget_eval", i, it) for i, it in enumerate(spec.forget_eval)] + \
                    [("probes", i, it) for i, it in enumerate(spec.probes) if not it.answer]
    says_b = sum(LETTERS[letter_question(spec, s, i, it, 4).correct] == "B" for s, i, it in concept_items)
    letter = m["formats"]["letter"]
    for side in ("base", "adapted"):
        assert letter["concept"][side]["n"] == len(concept_items) == 5
        assert letter["concept"][side]["top1_count"] == says_b and letter["concept"][side]["chance"] == 0.25
    sets = letter["sets"]
    assert set(sets) == {"forget_eval", "probes", "neighbors", "neighbors.anchored", "neighbors.unseen", "retain_eval"}
    assert sets["neighbors.unseen"]["n"] == 3 and sets["neighbors.anchored"] == {"n": 0}  # tiny: all unseen
    assert sets["forget_eval"]["mean_abs_delta_answer_logprob"] == 0.0
    assert m["formats"]["set_lead"]["concept"]["base"]["chance"] == 1 / len(spec.candidates)
    assert m["worst_format"] in m["formats"]
