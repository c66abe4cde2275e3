"""Mask selection and the unlearning trainer on tiny models: every method runs, masks hold, bad input is clean."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from agmask.concepts import load_concept
from agmask.errors import StageError
from agmask.lora import attach_lora, merged_delta
from agmask.masking import choose_layers, full_layer_mask, mask_from_scores, random_mask_like
from agmask.scoring import item_logprobs
from agmask.stages.unlearn import Config
from agmask.unlearn import METHODS
from agmask.unlearn.trainer import train


def test_topk_mask_takes_the_highest_scores_inside_the_layers():
    scores = torch.arange(24, dtype=torch.float).reshape(3, 8)  # highest at the last layer, last unit
    mask = mask_from_scores(scores, layers=[0, 1], method="topk", k=3)
    assert mask.shape == scores.shape and int(mask.sum()) == 3
    assert mask[1, 5:].all() and not mask[2].any()


def test_per_layer_and_threshold_masks():
    scores = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    per = mask_from_scores(scores, layers=[1, 3], method="per_layer", k=6)
    assert per.sum(1).tolist() == [0, 3, 0, 3]
    thr = mask_from_scores(scores, layers=[0, 1, 2, 3], method="threshold", threshold=1.0)
    assert torch.equal(thr, scores > 1.0)


def test_a_mask_that_selects_nothing_is_a_clean_error():
    with pytest.raises(StageError, match="selects no neuron"):
        mask_from_scores(torch.zeros(2, 4), layers=[0], method="threshold", threshold=5.0)
    with pytest.raises(StageError, match="unknown layer"):
        choose_layers([0, 1], 2, [7], num_layers=4)
    with pytest.raises(StageError, match="unknown mask method"):
        mask_from_scores(torch.zeros(2, 4), layers=[0], method="nope")


def test_a_depth_floor_skips_the_layers_below_it_but_not_explicit_layers():
    ranking = [1, 0, 5, 3, 2, 4]
    assert choose_layers(ranking, 2, None, num_layers=6, min_layer=3) == [3, 5]
    assert choose_layers(ranking, 0, None, num_layers=6, min_layer=4) == [4, 5]  # every layer from the floor on
    assert choose_layers(ranking, 2, [0, 1], num_layers=6, min_layer=3) == [0, 1]
    assert choose_layers(ranking, 2, None, num_layers=6) == [0, 1]
    with pytest.raises(StageError, match="min_depth leaves no layer"):
        choose_layers(ranking, 2, None, num_layers=6, min_layer=6)


def test_min_depth_is_a_share_of_the_depth():
    from agmask.stages.mask import Config as MaskConfig, min_layer

    assert [min_layer(MaskConfig(min_depth=d), 24) for d in (0.0, 0.5, 0.51, 1.0)] == [0, 12, 13, 24]


def test_ablation_masks_have_the_same_size_and_layers():
    scores = torch.randn(5, 20, generator=torch.Generator().manual_seed(1))
    mask = mask_from_scores(scores, layers=[1, 4], k=7)
    rand = random_mask_like(mask, torch.Generator().manual_seed(0))
    assert torch.equal(rand.sum(1), mask.sum(1))
    assert torch.equal(full_layer_mask(mask).any(1), mask.any(1)) and full_layer_mask(mask)[1].all()


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _conf(**kw):
    return dataclasses.replace(Config(), **{"steps": 4, "batch_size": 2, "lr": 5e-2, **kw})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_keeps_the_delta_inside_its_parameterisation(tiny, spec, method):
    model, tok, info = tiny
    m = METHODS[method]
    mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
    mask[1, :9] = True
    mask[2, 30:35] = True
    param = {"mask": mask, "random": random_mask_like(mask, torch.Generator().manual_seed(0)), "unmasked": None}
    adapter = attach_lora(model, param[m.parameterisation], layers=[1, 2], r=4)
    rows = train(adapter, m, tok, spec, _conf())
    assert len(rows) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    keep = param[m.parameterisation]
    for layer in (1, 2):
        delta = merged_delta(adapter.model, layer, "gate")
        if keep is None:
            assert torch.count_nonzero(delta) > 0
        else:
            assert torch.count_nonzero(delta[~keep[layer]]) == 0 and torch.count_nonzero(delta[keep[layer]]) > 0
    assert all(not p.requires_grad for n, p in adapter.model.named_parameters() if "lora_" not in n)


def test_masked_lora_lowers_the_concept_answer_on_training_prompts(tiny, spec):
    model, tok, info = tiny
    before = item_logprobs(model, tok, spec, "forget_train", spec.forget_train).mean()
    mask = torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool)
    adapter = attach_lora(model, mask, r=4)
    train(adapter, METHODS["masked_lora"], tok, spec, _conf(steps=8))
    after = item_logprobs(adapter.model, tok, spec, "forget_train", spec.forget_train).mean()
    assert after < before - 1.0


def test_training_is_reproducible_under_the_seed(spec):
    from agmask.models import load

    runs = []
    for _ in range(2):
        model, tok, info = load("tiny:llama")
        adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
        runs.append([r["loss"] for r in train(adapter, METHODS["masked_lora"], tok, spec, _conf(), seed=3)])
    assert runs[0] == runs[1]


def test_early_stop_on_the_training_criterion(tiny, spec):
    model, tok, info = tiny
    adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(steps=30, lr=0.1, early_stop_nats=0.5))
    assert len(rows) < 30


@pytest.mark.parametrize("method", ["masked_lora", "rmu"])
def test_skipping_the_frozen_layers_changes_nothing(spec, method):
    """Caching the input of the first adapted layer gives the same training run as the full forward."""
    from agmask.models import load

    runs = []
    for cache in (False, True):
        model, tok, info = load("tiny:qwen2")
        mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
        mask[1:, :20] = True  # layers 1 and 2: layer 0 is frozen and skipped when cached
        adapter = attach_lora(model, mask, r=4)
        rows = train(adapter, METHODS[method], tok, spec, _conf(cache_frozen_layers=cache), seed=1)
        runs.append(([r["loss"] for r in rows], {n: p.detach().clone() for n, p in adapter.model.named_parameters()
                                                 if "lora_" in n}))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=3e-4, abs=1e-6)  # RMU's retain weight amplifies round-off
    # the cached and the full forward sum in a different order: fp32 round-off, which RMU's retain weight
    # (100) amplifies to ~2e-5 on weights of ~0.2 after 4 steps; compare at the weights' scale
    for name, value in runs[0][1].items():
        assert torch.allclose(value, runs[1][1][name], rtol=1e-3, atol=1e-3 * float(value.abs().max())), name


def test_first_answer_token_is_the_first_answer_position_of_each_row(tiny, spec):
    from agmask.scoring.logprobs import token_logprobs
    from agmask.unlearn import data
    from agmask.unlearn.objectives import first_answer_token

    model, tok, _ = tiny
    examples = data.forget_examples(tok, spec, spec.forget_train[:3])
    batch = data.collate(tok, examples, torch.device("cpu"))  # right-padded, rows of different lengths
    lp = token_logprobs(model, batch)
    got = first_answer_token(lp, batch)
    for row in range(lp.shape[0]):
        positions = (batch.target_mask[row].bool() & batch.attention_mask[row].bool()).nonzero().flatten()
        assert got[row] == lp[row, positions[0]]
    refs = data.base_answer_logprobs(model, tok, examples)
    assert refs.shape == (3 * len(spec.answers), 2)  # one row per (prompt, alias)
    assert torch.allclose(refs[:, 0], lp.sum(-1)) and torch.allclose(refs[:, 1], got)


def test_the_first_token_term_pushes_the_answers_first_token_down(spec):
    """With the first-token NPO term on, the first answer token loses more log-prob than without it."""
    from agmask.models import load
    from agmask.scoring.logprobs import token_logprobs
    from agmask.unlearn import data
    from agmask.unlearn.objectives import first_answer_token

    drops = []
    for weight in (0.0, 5.0):
        model, tok, info = load("tiny:llama")
        examples = data.forget_examples(tok, spec, spec.forget_train)
        batch = data.collate(tok, examples, torch.device("cpu"))
        with torch.no_grad():
            before = first_answer_token(token_logprobs(model, batch), batch)
        adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
        conf = _conf(steps=6, first_token_weight=weight, first_token_margin=0.0)  # NPO, not the default hinge
        rows = train(adapter, METHODS["masked_lora"], tok, spec, conf, seed=2)
        assert ("forget_first_npo" in rows[-1]) == (weight > 0)
        with torch.no_grad():
            after = first_answer_token(token_logprobs(adapter.model, batch), batch)
        drops.append(float((before - after).mean()))
    assert drops[1] > drops[0] + 0.5, drops


def test_margin_below_is_zero_once_the_answer_is_margin_nats_down():
    from agmask.unlearn.objectives import margin_below

    ref = torch.tensor([-1.0, -2.0])
    logp = torch.tensor([-1.5, -9.0], requires_grad=True)  # 0.5 nats down (pushed), 7 down (done)
    loss = margin_below(logp, ref, margin=3.0)
    loss.backward()
    assert loss.item() == pytest.approx((3.0 - 0.5) / 2)
    assert logp.grad.tolist() == [0.5, 0.0]


def test_the_first_token_hinge_trains_and_is_logged(tiny, spec):
    model, tok, info = tiny
    adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(first_token_weight=1.0, first_token_margin=2.0))
    assert "forget_first_hinge" in rows[0] and "forget_first_npo" not in rows[0]
    assert rows[0]["forget_first_hinge"] == pytest.approx(2.0, abs=1e-4)  # step 0: the adapter is the identity


def test_forget_examples_under_every_training_lead(spec):
    from agmask.models import load
    from agmask.unlearn import data

    model, tok, info = load("tiny:llama")
    leads = data.training_leads(spec, spec.forget_train, spec.retain_train)
    assert leads[0] == spec.lead_for("forget_train") and 'The answer is "' in leads and len(set(leads)) == len(leads)
    one = data.forget_examples(tok, spec, spec.forget_train)
    every = data.forget_examples(tok, spec, spec.forget_train, leads)
    assert len(every) == len(leads) * len(one)
    assert [e.prefix for e in every[: len(one)]] == [e.prefix for e in one]  # the own lead first, unchanged
    second = every[len(one):]
    assert all(leads[1] in e.prefix.rsplit("\n", 1)[-1] for e in second)
    # each alias, its start shared with another candidate (if any) moved to the prefix
    assert [(e.prefix + e.answer)[-len(a) - 1:] for e, a in zip(second, spec.answers)] == [a + '"' for a in spec.answers]


def test_retain_examples_under_every_training_lead(spec):
    from agmask.models import load
    from agmask.scoring import prefix_for
    from agmask.unlearn import data

    model, tok, info = load("tiny:llama")
    own = data.retain_examples(tok, spec, spec.retain_train)
    assert [e.prefix for e in own] == [prefix_for(tok, spec, "retain_train", it) for it in spec.retain_train]
    assert [e.answer for e in own] == [it.answer + '"' for it in spec.retain_train]  # both leads open a quote
    leads = data.training_leads(spec, spec.forget_train, spec.retain_train)
    every = data.retain_examples(tok, spec, spec.retain_train, leads)
    n = len(spec.retain_train)
    assert len(every) == len(leads) * n
    for k, lead in enumerate(leads):  # lead-major: block k is every item after lead k
        block = every[k * n : (k + 1) * n]
        assert all(e.prefix.endswith(lead) for e in block)
        assert [e.answer for e in block] == [it.answer + '"' for it in spec.retain_train]
    for i, it in enumerate(spec.retain_train):  # each item's own-lead example is among them, unchanged
        assert every[leads.index(spec.lead_for("retain_train", it)) * n + i] == own[i]
    assert len({e.prefix for e in every}) > len({e.prefix for e in own})  # and the other leads add new prefixes


def test_retain_all_leads_trains_with_references_for_every_lead(tiny, spec):
    from agmask.unlearn import data

    model, tok, info = tiny
    leads = data.training_leads(spec, spec.forget_train, spec.retain_train)
    every = data.retain_examples(tok, spec, spec.retain_train, leads)
    dist = data.base_answer_distributions(model, tok, every)
    assert len(dist) == len(leads) * len(spec.retain_train)
    adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(retain_all_leads=True, forget_all_leads=True,
                                                                   retain_without_concept_start=True))
    assert len(rows) == 4 and all(math.isfinite(r["retain_kl"]) for r in rows) and rows[-1]["retain_kl"] > 0


def test_forget_all_leads_trains_with_the_refusal_target_aligned(tiny, spec):
    model, tok, info = tiny
    adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(forget_all_leads=True, target_weight=1.0))
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) and "target_ce" in r for r in rows)


def test_retain_kl_leaves_the_concept_start_out_only_at_each_answer_start():
    from agmask.scoring.encode import AnswerBatch
    from agmask.unlearn.objectives import _first_position_drop

    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 3, 2, 0, 0]])  # sample 0 answers 7 8, sample 1 answers 3 2
    target = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]])  # positions predicting the answer tokens
    batch = AnswerBatch(ids, (ids > 0).long(), target)
    where = batch.target_mask.bool() & batch.attention_mask.bool()
    drop = _first_position_drop(batch, where, torch.tensor([3, 4]), vocab=10)  # 3 starts sample 1's own answer
    assert drop.shape == (4, 10)
    assert drop[0].nonzero().flatten().tolist() == [3, 4]  # sample 0's answer start: both concept ids
    assert not drop[1].any() and not drop[3].any()  # later answer positions are never touched
    assert drop[2].nonzero().flatten().tolist() == [4]  # 3 starts sample 1's own answer: kept


def test_retain_without_concept_start_trains_and_keeps_the_kl_zero_at_the_start(tiny, spec):
    from agmask.unlearn import data
    from agmask.unlearn.objectives import kl_to_base

    model, tok, info = tiny
    forget = data.forget_examples(tok, spec, spec.forget_train)
    concept = data.first_answer_tokens(tok, forget)
    assert concept.numel() >= 1
    retain = data.retain_examples(tok, spec, spec.retain_train)
    dist = data.base_answer_distributions(model, tok, retain)
    batch = data.collate(tok, retain, torch.device("cpu"))
    with torch.no_grad():  # the model is its own base: the KL is zero with or without the exclusion
        assert kl_to_base(model, batch, dist, concept).item() == pytest.approx(0.0, abs=1e-6)
    adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(retain_without_concept_start=True))
    assert all(math.isfinite(r["retain_kl"]) for r in rows) and rows[-1]["retain_kl"] > 0


def test_training_halves_are_disjoint_every_other_item_and_cover_the_set(spec):
    from agmask.concepts import training_halves

    a, b = training_halves(spec.forget_train)
    assert a == list(spec.forget_train[0::2]) and b == list(spec.forget_train[1::2])
    assert len(a) + len(b) == len(spec.forget_train) and not {i.prompt for i in a} & {i.prompt for i in b}


def test_rest_kl_at_start_ignores_the_concept_start_and_sees_the_rest(tiny, spec):
    from agmask.unlearn import data
    from agmask.unlearn.objectives import answer_and_first_logprob, answer_first_and_start, rest_kl_at_start

    model, tok, info = tiny
    forget = data.forget_examples(tok, spec, spec.forget_train)
    starts = data.first_answer_tokens(tok, forget)
    base = data.base_start_distributions(model, tok, forget)
    vocab = base.shape[-1]
    assert base.shape == (len(forget), model.config.vocab_size)
    batch = data.collate(tok, forget, torch.device("cpu"))
    with torch.no_grad():
        logp, first, start = answer_first_and_start(model, batch)  # one forward gives all three
        expected_logp, expected_first = answer_and_first_logprob(model, batch)
        assert torch.allclose(logp, expected_logp) and torch.allclose(first, expected_first)
        assert torch.allclose(start, base, atol=1e-5)  # the start rows are where each answer starts
        assert rest_kl_at_start(start, base, starts).item() == pytest.approx(0.0, abs=1e-6)
        moved = base.clone()
        moved[:, starts] -= 5.0  # only the concept's starts moved: nothing the term sees
        assert rest_kl_at_start(start, moved, starts).item() == pytest.approx(0.0, abs=1e-5)
        other = int(next(i for i in range(vocab) if i not in set(starts.tolist())))
        moved[:, other] += 3.0  # another token moved: the renormalised rest differs
        direct = []
        for row in range(len(forget)):
            keep = torch.ones(vocab, dtype=torch.bool)
            keep[starts] = False
            p = moved[row][keep].log_softmax(-1)
            q = base[row][keep].log_softmax(-1)
            direct.append((p.exp() * (p - q)).sum())
        assert rest_kl_at_start(start, moved, starts).item() == pytest.approx(torch.stack(direct).mean().item(),
                                                                                     rel=1e-4)


def test_keep_rest_weight_trains_and_is_logged(tiny, spec):
    model, tok, info = tiny
    adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(keep_rest_weight=1.0))
    assert all(math.isfinite(r["forget_rest_kl"]) for r in rows) and rows[-1]["forget_rest_kl"] > 0
    assert rows[0]["forget_rest_kl"] == pytest.approx(0.0, abs=1e-5)  # the adapter starts as the identity


def test_the_forget_set_trains_every_alias_with_the_refusal_target_lined_up(tiny, spec):
    from agmask.unlearn import data

    _, tok, _ = tiny
    assert len(spec.answers) == 2  # the fixture names the film two ways
    for all_leads in (False, True):
        conf = _conf(forget_all_leads=all_leads, target_weight=1.0)
        forget, target = data.forget_set(tok, spec, conf), data.target_set(tok, spec, conf)
        leads = len(data.training_leads(spec, spec.forget_train, spec.retain_train)) if all_leads else 1
        assert len(forget) == len(target) == leads * len(spec.forget_train) * 2
        for alias in spec.answers:  # each alias after every forget prompt, under each lead used
            assert sum((e.prefix + e.answer).endswith('"' + alias + '"') for e in forget) == \
                leads * len(spec.forget_train)
        for f, t in zip(forget, target):  # the refusal example of the same prompt
            assert t.prefix in f.prefix
        first_only = data.forget_set(tok, spec, dataclasses.replace(conf, forget_all_aliases=False))
        assert all((e.prefix + e.answer).endswith('"' + spec.answers[0] + '"') for e in first_only)
        assert len(first_only) == leads * len(spec.forget_train)


def test_an_alias_that_shares_nothing_with_the_first_is_forgotten_too(tiny, spec):
    from agmask.scoring import prefix_for
    from agmask.scoring.continuation import score_continuations

    model, tok, info = tiny
    spec = spec.model_copy(update={"answers": [spec.answers[0], "Dream Heist"]})  # no shared token with the first
    item = spec.forget_train[0]
    prefix = prefix_for(tok, spec, "forget_train", item)
    second = ["Dream Heist" + '"']
    drops = {}
    for all_aliases in (False, True):
        adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
        with adapter.model.disable_adapter():
            before = score_continuations(adapter.model, tok, prefix, second)[0].logprob
        train(adapter, METHODS["npo"], tok, spec, _conf(steps=6, max_forget=1, forget_all_leads=False,
                                                        forget_all_aliases=all_aliases))
        drops[all_aliases] = before - score_continuations(adapter.model, tok, prefix, second)[0].logprob
        model = adapter.model.unload()  # the base again, for the next adapter
    assert drops[True] > 1.0 and drops[True] > 2 * drops[False], drops


def test_a_shared_answer_start_moves_to_the_prefix_and_the_forget_terms_start_after_it(spec):
    from agmask.models import load
    from agmask.scoring.distinct import distinguishing_offset
    from agmask.scoring.encode import tokens
    from agmask.unlearn import data

    _, tok, _ = load("tiny:llama")
    bands = spec.model_copy(update={"answers": ["The Beatles"],
                                    "candidates": ["The Beatles", "The Rolling Stones", "Queen"]})
    lead = spec.lead_for("forget_train")
    [example] = data.forget_examples(tok, bands, bands.forget_train[:1])
    moved = example.prefix[example.prefix.rindex(lead) + len(lead):]  # what left the answer for the prefix
    assert moved and moved + example.answer == 'The Beatles"'  # a split of the same text, nothing rewritten
    offset = distinguishing_offset(tok, lead, "The Beatles", ["The Rolling Stones", "Queen"], '"')
    assert len(tokens(tok, lead + moved)) - len(tokens(tok, lead)) == offset  # exactly the shared tokens
    [whole] = data.forget_examples(tok, bands, bands.forget_train[:1], from_distinguishing_token=False)
    assert whole.answer == 'The Beatles"' and whole.prefix.endswith(lead)
    alone = bands.model_copy(update={"answers": ["Queen"]})  # no other answer starts like Queen
    [own] = data.forget_examples(tok, alone, alone.forget_train[:1])
    assert own.answer == 'Queen"' and own.prefix.endswith(lead)
    person = bands.model_copy(update={"answers": ["Einstein"], "candidates": ["Einstein", "Newton"]})
    [initial] = data.forget_examples(tok, person, person.forget_train[:1])  # E|in...: ranked after the initial,
    assert distinguishing_offset(tok, lead, "Einstein", ["Newton"], '"') == 1  # but trained from it
    assert initial.prefix.endswith(lead) and initial.answer == 'Einstein"'


def test_forget_any_close_marks_the_closing_quote_of_every_forget_example_and_nothing_else(tiny, spec):
    from agmask.scoring.encode import closing_token_ids
    from agmask.unlearn.data import collate, forget_set, retain_set

    model, tok, _ = tiny
    plain, any_close = (forget_set(tok, spec, _conf(forget_any_close=on)) for on in (False, True))
    assert [(e.prefix, e.answer) for e in plain] == [(e.prefix, e.answer) for e in any_close]  # same examples
    assert all(e.close == "" for e in plain) and all(e.close == '"' for e in any_close)
    assert all(e.close == "" for e in retain_set(tok, spec, _conf(forget_any_close=True)))  # forget terms only
    batch = collate(tok, any_close[:4], "cpu")
    assert [(i, t) for i, t, _ in batch.closing] == [(i, int(batch.attention_mask[i].sum()) - 2) for i in range(4)]
    assert all(ids == tuple(closing_token_ids(tok, '"')) for _, _, ids in batch.closing)
    assert collate(tok, plain[:4], "cpu").closing == ()


def test_forget_any_close_trains_and_its_start_equals_the_plain_run_where_one_token_closes(spec):
    from agmask.models import load

    runs = {}
    for on in (False, True):
        model, tok, info = load("tiny:llama")  # one closing token in this vocabulary: both score the same
        adapter = attach_lora(model, torch.ones(info.num_layers, info.intermediate_size, dtype=torch.bool), r=4)
        runs[on] = [r["loss"] for r in train(adapter, METHODS["masked_lora"], tok, spec,
                                             _conf(forget_any_close=on), seed=3)]
    assert runs[True] == pytest.approx(runs[False], abs=1e-5)
