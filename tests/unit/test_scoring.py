"""Answer scoring invariants on tiny models: forced answers, the prefix check, aliases, ranks, batching."""
from __future__ import annotations

import math

import pytest
import torch

from agmask.concepts import load_concept
from agmask.models import load
from agmask.scoring import answer_hit, prefix_for, score_items, summarize
from agmask.scoring.continuation import score_continuations
from agmask.scoring.distinct import distinguishing_offset, others_than
from agmask.scoring.encode import (closes_answer, closing_for, closing_token_ids, collate_answers, encode_answer,
                                   render_prompt, tokens)
from agmask.scoring.generate import generate
from agmask.scoring.logprobs import answer_logprobs, token_logprobs


def _uniform(model):
    """Zero the lm_head: every next token has probability 1/V, so log-probs are known exactly."""
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    return model


def test_forced_uniform_model_gives_known_logprobs_and_ranks(tiny):
    model, tok, _ = tiny
    _uniform(model)
    vocab = model.config.vocab_size
    prefix = render_prompt(tok, "Which film?") + 'The movie is "'
    answers = ['Inception"', 'The Matrix"']
    scores = score_continuations(model, tok, prefix, answers)
    for answer, score in zip(answers, scores):
        n = len(encode_answer(tok, prefix, answer).input_ids) - encode_answer(tok, prefix, answer).answer_start
        assert score.num_tokens == n
        assert score.logprob == pytest.approx(-n * math.log(vocab), rel=1e-5)
        assert score.first_rank == 1  # all logits tie: nothing is strictly better
    batch = collate_answers(tok, [prefix] * 2, answers)
    assert answer_logprobs(model, batch).tolist() == pytest.approx([s.logprob for s in scores], rel=1e-5)


def test_cached_and_batched_paths_agree_including_a_boundary_merge(tiny):
    model, tok, _ = tiny
    prefix = render_prompt(tok, "Which film?") + "The movie is Inc"
    encoded = encode_answer(tok, prefix, "eption")
    assert not encoded.prefix_is_prefix  # "c" + "e" merge across the boundary in the tiny tokenizer
    assert encoded.answer_start == len(tokens(tok, prefix)) - 1  # the merged token is scored
    conts = ["eption", "ognito", "a", "eption and more"]
    cached = [s.logprob for s in score_continuations(model, tok, prefix, conts)]
    batched = answer_logprobs(model, collate_answers(tok, [prefix] * len(conts), conts)).tolist()
    assert cached == pytest.approx(batched, abs=1e-4)
    # one sequence at a time, no padding at all
    single = [answer_logprobs(model, collate_answers(tok, [prefix], [c])).item() for c in conts]
    assert batched == pytest.approx(single, abs=1e-4)


def test_first_token_rank_matches_a_full_forward(tiny):
    model, tok, _ = tiny
    prefix = render_prompt(tok, "Name a film.") + 'The movie is "'
    score = score_continuations(model, tok, prefix, ['Memento"'])[0]
    ids = tokens(tok, prefix)
    first = encode_answer(tok, prefix, 'Memento"').input_ids[len(ids)]
    logits = model(torch.tensor([ids])).logits[0, -1]
    assert score.first_rank == int((logits > logits[first]).sum()) + 1


def test_a_closing_token_is_the_quote_alone_after_punctuation_or_before_anything_but_a_letter():
    assert all(closes_answer(p, '"') for p in ['"', '".', '",', '"\n', '."', ',"', '?"', '")'])
    assert not any(closes_answer(p, '"') for p in ['"s', ' "', 'Knight"', '.', ' Rises', ''])
    assert closes_answer("'", "'") and closes_answer(".'", "'") and not closes_answer("'s", "'")
    assert not closes_answer('"', "")  # no quote opened, nothing closes


@pytest.mark.parametrize("arch", ["tiny:llama", "tiny:qwen2"])
def test_the_answer_ends_with_any_closing_token_however_the_model_punctuates(arch):
    from agmask.models import load

    model, tok, _ = load(arch)  # a copy of its own: it gains the tokens a real BPE vocabulary has
    tok.add_tokens(['".', '."', "'s"])
    model.resize_token_embeddings(len(tok))
    prefix = render_prompt(tok, "Name a film.") + 'The movie is "'
    closing = closing_token_ids(tok, '"')
    assert [tok.decode([i]) for i in closing] == ['"', '".', '."']
    assert all(closes_answer(tok.decode([i]), '"') for i in closing)
    any_close, open_ended = score_continuations(model, tok, prefix, ['Memento"', "Memento"], close='"')
    plain = score_continuations(model, tok, prefix, ['Memento"', "Memento"])  # no close given: tokens as they are
    assert open_ended.logprob == pytest.approx(plain[1].logprob, abs=1e-5)  # no closing token, nothing changes
    # by hand: the name's tokens, then the log of the probability of every closing token at the last position
    ids = encode_answer(tok, prefix, 'Memento"').input_ids
    start = encode_answer(tok, prefix, 'Memento"').answer_start
    log_probs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    name = sum(log_probs[k - 1, ids[k]].item() for k in range(start, len(ids) - 1))
    ends = log_probs[len(ids) - 2, closing].logsumexp(-1).item()
    assert any_close.logprob == pytest.approx(name + ends, abs=1e-4)
    assert any_close.logprob >= plain[0].logprob - 1e-6  # at least the bare quote's probability


def test_a_uniform_model_ends_the_answer_with_the_share_of_closing_tokens(tiny):
    model, tok, _ = tiny
    _uniform(model)
    vocab = model.config.vocab_size
    prefix = render_prompt(tok, "Which film?") + 'The movie is "'
    score = score_continuations(model, tok, prefix, ['Inception"'], close='"')[0]
    n = score.num_tokens
    share = len([i for i in closing_token_ids(tok, '"') if i < vocab]) / vocab
    assert score.logprob == pytest.approx(-(n - 1) * math.log(vocab) + math.log(share), rel=1e-5)


def test_target_mask_counts_answer_tokens_even_when_pad_is_eos(tiny):
    model, tok, _ = tiny
    tok.pad_token = tok.eos_token  # labels come from the attention mask, never from the pad id
    prefix = render_prompt(tok, "Say it.")
    answers = ["FORGOTTEN" + tok.eos_token, "no"]
    batch = collate_answers(tok, [prefix] * 2, answers)
    for i, a in enumerate(answers):
        e = encode_answer(tok, prefix, a)
        assert int(batch.target_mask[i].sum()) == len(e.input_ids) - e.answer_start
    assert batch.targets[0][batch.target_mask[0].bool()][-1].item() == tok.eos_token_id
    lp = token_logprobs(model, batch)
    assert torch.all(lp[~batch.target_mask.bool()] == 0)


def test_aliases_take_the_max_and_mc_shares_are_a_distribution(tiny, tiny_concept_path):
    model, tok, _ = tiny
    spec = load_concept(str(tiny_concept_path)).spec
    row = score_items(model, tok, spec, "forget_train", spec.forget_train[:1])[0]
    prefix = prefix_for(tok, spec, "forget_train", spec.forget_train[0].prompt)
    close = closing_for(spec.lead_for("forget_train"))
    lead = spec.lead_for("forget_train")
    at = [distinguishing_offset(tok, lead, a, others_than(spec, a), close) for a in spec.answers]
    alias_scores = score_continuations(model, tok, prefix, [a + close for a in spec.answers], rank_at=at)
    assert row.answer_logprob == pytest.approx(max(s.logprob for s in alias_scores), abs=1e-5)
    assert row.first_token_rank == min(s.first_rank for s in alias_scores)
    cand = score_continuations(model, tok, prefix, [c + close for c in spec.candidates])
    lps = [row.answer_logprob if c == "Inception" else s.logprob for c, s in zip(spec.candidates, cand)]
    shares = torch.tensor(lps).softmax(0)
    assert row.mc_share == pytest.approx(float(shares[0]), abs=1e-5)
    assert row.mc_rank == 1 + int((shares > shares[0]).sum())
    assert row.mc_top1 == (row.mc_rank == 1)


def test_items_without_a_candidate_answer_have_no_mc_view(tiny, tiny_concept_path):
    model, tok, _ = tiny
    spec = load_concept(str(tiny_concept_path)).spec
    rows = score_items(model, tok, spec, "retain_eval")
    assert all(r.mc_share is None for r in rows)
    assert summarize([r.to_dict() for r in rows])["mc_n"] == 0


def test_batched_left_padded_generation_matches_one_by_one(tiny):
    model, tok, _ = tiny
    prefixes = [render_prompt(tok, p) for p in ["Hi", "Which film has a spinning top in it?", "Tell me more."]]
    together = generate(model, tok, prefixes, max_new_tokens=6, batch_size=3)
    alone = [generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prefixes]
    assert together == alone


def test_sampled_generation_is_seeded_and_leaves_the_global_rng_alone(tiny):
    model, tok, _ = tiny
    prefix = [render_prompt(tok, "Hi")]
    state = torch.random.get_rng_state()
    a = generate(model, tok, prefix, max_new_tokens=5, do_sample=True, num_return_sequences=3, seed=7)
    b = generate(model, tok, prefix, max_new_tokens=5, do_sample=True, num_return_sequences=3, seed=7)
    assert a == b and len(a[0]) == 3
    assert torch.equal(state, torch.random.get_rng_state())


def test_answer_hit_is_case_insensitive():
    assert answer_hit('It is inception", a film', ["Inception"])
    assert not answer_hit("FORGOTTEN", ["Inception"])


def test_summary_uses_base_known_subset():
    rows = [
        {"index": 0, "answer_logprob": -1.0, "first_token_rank": 1, "mc_share": 0.9, "mc_top1": True, "hit": True},
        {"index": 1, "answer_logprob": -9.0, "first_token_rank": 50, "mc_share": 0.1, "mc_top1": False, "hit": False},
    ]
    s = summarize(rows)
    assert s["base_known_n"] == 1 and s["greedy_hit_rate_base_known"] == 1.0
    assert summarize(rows, known={1})["greedy_hit_rate_base_known"] == 0.0
    assert s["median_first_token_rank"] == 25.5 and s["mc_top1_rate"] == 0.5


def test_an_items_own_lead_replaces_the_sets_lead_everywhere_it_is_scored(tiny, tiny_concept_path):
    model, tok, _ = tiny
    spec = load_concept(str(tiny_concept_path)).spec
    item = spec.retain_train[0]
    own = item.model_copy(update={"lead": 'The movie is "'})
    assert prefix_for(tok, spec, "retain_train", item).endswith(spec.lead_for("retain_train"))
    assert prefix_for(tok, spec, "retain_train", own) == render_prompt(tok, own.prompt) + 'The movie is "'
    assert prefix_for(tok, spec, "retain_train", own.prompt) == prefix_for(tok, spec, "retain_train", item)
    row = score_items(model, tok, spec, "retain_train", [own])[0]
    expected = score_continuations(model, tok, prefix_for(tok, spec, "retain_train", own), [own.answer + '"'])[0]
    assert row.answer_logprob == pytest.approx(expected.logprob, abs=1e-5)

    from agmask.unlearn.data import retain_examples

    assert retain_examples(tok, spec, [own])[0].prefix.endswith('The movie is "')


def test_trie_packing_shares_common_tokens_and_scores_like_separate_sequences(tiny):
    from agmask.scoring.continuation import _trie

    model, tok, _ = tiny
    prefix = render_prompt(tok, "Which film?") + 'The movie is "'
    conts = ['The Matrix"', 'The Matrix Reloaded"', 'The Prestige"', 'Inception"', 'The Matrix"x']
    joints = [tokens(tok, prefix + c) for c in conts]
    shared = len(tokens(tok, prefix))
    node_tokens, parents, _ = _trie(joints, shared)
    # every token but each continuation's last is read once per distinct path: fewer positions than tails
    assert len(node_tokens) < sum(len(j) - shared - 1 for j in joints)
    assert all(p < i for i, p in enumerate(parents))  # parents come first
    packed = score_continuations(model, tok, prefix, conts)
    single = [answer_logprobs(model, collate_answers(tok, [prefix], [c])).item() for c in conts]
    assert [s.logprob for s in packed] == pytest.approx(single, abs=1e-4)
    for c, s in zip(conts, packed):  # first-token ranks from a plain forward of the prefix
        first = encode_answer(tok, prefix, c).input_ids[shared]
        logits = model(torch.tensor([tokens(tok, prefix)])).logits[0, -1]
        assert s.first_rank == int((logits > logits[first]).sum()) + 1



def test_the_first_token_rank_is_taken_at_the_first_distinguishing_token(tiny):
    from agmask.scoring.encode import tokens

    model, tok, _ = tiny
    lead = 'The band is "'
    others = ["The Rolling Stones", "Queen"]
    offset = distinguishing_offset(tok, lead, "The Beatles", others, '"')
    mine, theirs = tokens(tok, lead + 'The Beatles"'), tokens(tok, lead + 'The Rolling Stones"')
    start = len(tokens(tok, lead))
    assert offset > 0 and mine[: start + offset] == theirs[: start + offset]  # the shared start
    assert mine[start + offset] != theirs[start + offset]  # then its own token
    # an answer no other shares a start with: only an initial (`T|he` to the tiny tokenizer) moves it
    assert distinguishing_offset(tok, lead, "The Beatles", ["Queen"], '"') == \
        distinguishing_offset(tok, lead, "The Beatles", [], '"') < offset
    # a prefix of another answer is distinguished by its closing quote at the latest
    short = distinguishing_offset(tok, lead, "The Who", ["The Whole Story"], '"')
    assert short == len(tokens(tok, lead + 'The Who"')) - start - 1
    # the rank read at that token is the rank of that token in a plain forward over the shared start
    prefix = "Question: name a band\nAnswer: " + lead
    [plain, shifted] = [score_continuations(model, tok, prefix, ['The Beatles"'], rank_at=[k])[0] for k in (0, offset)]
    ids = tokens(tok, prefix + 'The Beatles"')
    n = len(tokens(tok, prefix))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    def rank(pos: int) -> int:
        return int((logits[pos - 1] > logits[pos - 1, ids[pos]]).sum()) + 1
    assert plain.first_rank == rank(n) and shifted.first_rank == rank(n + offset)


def test_the_other_known_answers_leave_out_the_answer_and_for_the_concept_every_alias(tiny_concept_path):
    from agmask.scoring.distinct import known_answers

    spec = load_concept(str(tiny_concept_path)).spec  # answers Inception, Inception (2010); Inception a candidate
    known = known_answers(spec)
    assert [a.casefold() for a in known] == list(dict.fromkeys(a.casefold() for a in spec.answers + spec.candidates))
    for alias in spec.answers:
        assert not {a.casefold() for a in spec.answers} & {a.casefold() for a in others_than(spec, alias)}
    other = next(c for c in spec.candidates if not spec.is_concept_answer(c))
    assert other not in others_than(spec, other) and spec.answers[0] in others_than(spec, other)


def test_a_one_letter_first_token_gives_way_to_the_next(tiny):
    """`Einstein` is `E|instein` to the default model's tokenizer: the rank is read after such an initial (training,
    `initials=False`, keeps it); not when the answer is spelt letter by letter, is that letter alone, or the letter
    is followed by a dot."""
    from agmask.scoring.distinct import answer_tokens_and_offset
    from agmask.scoring.encode import tokens

    _, tok, _ = tiny
    lead = 'The answer is "'
    start = len(tokens(tok, lead))
    pieces = {a: [tok.decode([t]) for t in tokens(tok, lead + a + '"')[start:]] for a in ("Einstein", "Euler", "E.T.")}
    assert pieces["Einstein"][:2] == ["E", "in"] and pieces["Euler"][:2] == ["E", "u"] and pieces["E.T."][:2] == ["E", "."]
    assert distinguishing_offset(tok, lead, "Einstein", [], '"') == 1
    assert answer_tokens_and_offset(tok, lead, "Einstein", [], '"', initials=False)[1] == 0  # what training uses
    assert distinguishing_offset(tok, lead, "Euler", [], '"') == 0
    assert distinguishing_offset(tok, lead, "E.T.", [], '"') == 0
    assert distinguishing_offset(tok, lead, "E", [], '"') == 0
    # after a shared start, an initial gives way as well
    assert distinguishing_offset(tok, lead, "The Einstein", ["The Rolling Stones"], '"') == \
        distinguishing_offset(tok, lead, "The Beatles", ["The Rolling Stones"], '"') + 1


@pytest.mark.parametrize("arch", ["tiny:llama", "tiny:qwen2"])
def test_a_batch_scores_its_closing_quote_as_score_continuations_does(arch):
    from agmask.models import load

    model, tok, _ = load(arch)
    tok.add_tokens(['".', '."'])
    model.resize_token_embeddings(len(tok))
    prefix = render_prompt(tok, "Name a film.") + 'The movie is "'
    answers = ['Memento"', 'The Matrix"', "Memento"]
    batch = collate_answers(tok, [prefix] * 3, answers, closes=['"'] * 3)
    assert [i for i, _, _ in batch.closing] == [0, 1]  # the third answer has no closing quote
    summed = answer_logprobs(model, batch).tolist()
    cached = [s.logprob for s in score_continuations(model, tok, prefix, answers, close='"')]
    assert summed == pytest.approx(cached, abs=1e-4)
    bare = answer_logprobs(model, collate_answers(tok, [prefix] * 3, answers)).tolist()
    assert summed[0] > bare[0] and summed[1] > bare[1] and summed[2] == pytest.approx(bare[2], abs=1e-6)
    head = model.get_output_embeddings().weight.requires_grad_(True)
    answer_logprobs(model, batch)[0].backward()  # differentiable through the closing position
    closing = closing_token_ids(tok, '"')
    assert torch.isfinite(head.grad).all() and head.grad[closing].abs().sum() > 0
