"""The candidate distribution as a preference: known answers, and agreement with the multiple-choice view."""
from __future__ import annotations

import math

import pytest
import torch

from agmask.concepts import load_concept
from agmask.scoring import PrefixKV, candidate_logprobs, score_items
from agmask.scoring.preference import kl_remaining, remaining_log_distribution, remaining_titles, top_titles

TITLES = ["Concept", "Other", "Third"]


def _log(*probs: float) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def test_remaining_distribution_renormalises_without_the_concept():
    rest = remaining_log_distribution(_log(0.5, 0.3, 0.2), [0]).exp()
    assert rest.tolist() == pytest.approx([0.6, 0.4])
    assert remaining_titles(TITLES, [0]) == ["Other", "Third"]
    # unnormalised log-probs (a sum of answer-token log-probs) give the same distribution
    assert remaining_log_distribution(_log(0.5, 0.3, 0.2) - 7.0, [0]).exp().tolist() == pytest.approx([0.6, 0.4])
    with pytest.raises(ValueError, match="every candidate"):
        remaining_log_distribution(_log(0.5, 0.5), [0, 1])


def test_kl_remaining_known_value_and_zero_when_only_the_concept_moves():
    base, adapted = _log(0.5, 0.3, 0.2), _log(0.1, 0.45, 0.45)  # remaining: (0.6, 0.4) vs (0.5, 0.5)
    expected = 0.6 * math.log(0.6 / 0.5) + 0.4 * math.log(0.4 / 0.5)
    assert kl_remaining(base, adapted, [0]).item() == pytest.approx(expected)
    dropped = base.clone()
    dropped[0] -= 20.0  # the concept's candidate made ~impossible, the others' ratios kept
    assert kl_remaining(base, dropped, [0]).item() == pytest.approx(0.0, abs=1e-12)
    batch = kl_remaining(torch.stack([base, base]), torch.stack([adapted, dropped]), [0])  # (N,)
    assert batch.shape == (2,) and batch[0].item() == pytest.approx(expected)


def test_kl_remaining_gives_no_gradient_to_the_concept():
    """A training term built on it (keep the other titles' distribution) leaves the concept's logit free."""
    adapted = _log(0.1, 0.45, 0.45).requires_grad_(True)
    kl_remaining(_log(0.5, 0.3, 0.2), adapted, [0]).backward()
    assert adapted.grad[0].item() == 0.0 and adapted.grad[1:].abs().sum().item() > 0


def test_top_titles():
    assert top_titles(_log(0.2, 0.5, 0.3), TITLES, 2) == [("Other", pytest.approx(0.5)), ("Third", pytest.approx(0.3))]
    assert [t for t, _ in top_titles(_log(0.4, 0.2, 0.4), TITLES, 3)] == ["Concept", "Third", "Other"]  # ties: list order


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def test_candidate_logprobs_agree_with_the_multiple_choice_view(tiny, spec):
    model, tok, _ = tiny
    items = spec.items("recommend_eval")
    rows = score_items(model, tok, spec, "recommend_eval", items)
    for item, row in zip(items, rows):
        lp = torch.tensor(candidate_logprobs(model, tok, spec, "recommend_eval", item, kv=PrefixKV()))  # (C,)
        assert lp.shape == (len(spec.candidates),)
        assert lp.softmax(-1)[0].item() == pytest.approx(row.mc_share, rel=1e-6)  # the concept is candidate 0
        assert spec.candidates[int(lp.argmax())] == row.mc_top
        assert lp[0].item() == pytest.approx(row.answer_logprob, abs=1e-5)  # the concept: max over its aliases


def test_candidate_logprobs_is_none_without_a_multiple_choice_view(tiny, spec):
    model, tok, _ = tiny
    retain = spec.items("retain_eval")[0]  # answer "Paris" is not a candidate
    assert candidate_logprobs(model, tok, spec, "retain_eval", retain) is None


def test_other_titles_are_the_candidates_but_the_answer_and_the_concept(tiny, spec):
    from agmask.concepts.training_view import training_view
    from agmask.scoring import score_item, score_item_and_candidates
    from agmask.tuning.measure import other_titles

    model, tok, _ = tiny
    view = training_view(spec)
    general = spec.retain_train[0].model_copy(update={"answer": "Paris"})  # not a candidate: no other titles
    neighbour = spec.retain_train[0].model_copy(update={"answer": spec.candidates[1]})
    scored = [score_item_and_candidates(model, tok, spec, "retain_train", 0, it) for it in (general, neighbour)]
    rows = [other_titles(view, it, lps) for it, (_, lps) in zip((general, neighbour), scored)]
    every = candidate_logprobs(model, tok, spec, "retain_train", neighbour)
    assert rows[0] is None
    assert rows[1] == pytest.approx(every[2:], abs=1e-5)  # the concept is candidate 0, the answer candidate 1
    for it, (row, _) in zip((general, neighbour), scored):  # the same row score_item gives
        assert row == score_item(model, tok, spec, "retain_train", 0, it)
