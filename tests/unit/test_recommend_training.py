"""Training on recommendation prompts (issue 17 item 4) on tiny models: the packed candidate log-probs equal the
evaluation's, the preference KL starts at 0 and moves only through the adapter, the concept is out of it, the
terms are logged, a short run drops the concept's share while the rest of the preference holds, and a concept
without recommend_train trains as if the options were off."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from agmask.concepts import load_concept
from agmask.concepts.schema import ConceptSpec
from agmask.config import RunConfig, resolve_stage_config
from agmask.errors import AgmaskError
from agmask.lora import attach_lora
from agmask.progress import Reporter
from agmask.scoring import candidate_logprobs as eval_candidate_logprobs
from agmask.scoring import prefix_for
from agmask.scoring.continuation import score_continuations
from agmask.scoring.encode import encode_answer, tokens
from agmask.scoring.preference import kl_remaining
from agmask.stages import unlearn as unlearn_stage
from agmask.stages.unlearn import Config
from agmask.unlearn import METHODS
from agmask.unlearn.candidates import (base_candidate_logprobs, candidate_logprobs, collate_packed,
                                       packed_layer_inputs, pack_prompts, recommend_titles)
from agmask.unlearn.objectives import preference_kl
from agmask.unlearn.sources import Setup
from agmask.unlearn.trainer import train
from runkit import PLAIN_NPO

RECOMMEND = "recommend_train"


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _conf(**kw):
    return dataclasses.replace(Config(), **{**PLAIN_NPO, "steps": 3, "batch_size": 2, "lr": 5e-2, **kw})


class _Notes(Reporter):
    """A silent reporter that keeps what it was asked to log."""

    def __init__(self):
        super().__init__(enabled=False)
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_recommend_titles_put_the_canonical_answer_first_among_the_concept_columns(spec):
    assert recommend_titles(spec, all_candidates=False).names == ["Inception"]
    titles = recommend_titles(spec, all_candidates=True)
    assert titles.names == spec.candidates and titles.concept == 0 and titles.drop == [0]
    aliased = ConceptSpec.model_validate({**spec.model_dump(), "candidates": ["Memento", "Inception (2010)",
                                                                             "Inception", "Titanic"]})
    titles = recommend_titles(aliased, all_candidates=True)
    assert titles.concept == 2 and titles.drop == [1, 2]  # the NPO target is the canonical answer; both leave the KL


@pytest.mark.parametrize("cached", [False, True])
def test_packed_candidate_logprobs_are_the_evaluation_scores(tiny, spec, cached):
    """One padded batch of packed prompts (with or without the cached frozen layers) gives each title's summed
    log-prob as the evaluation scores it, and its first token's log-prob from a plain forward of the prefix."""
    model, tok, _ = tiny
    titles = recommend_titles(spec, all_candidates=True)
    packs = pack_prompts(tok, spec, spec.recommend_train, titles)
    assert len({len(p.ids) for p in packs}) > 1  # the batch really pads
    start = (2, packed_layer_inputs(model, packs, 2)) if cached else None
    with torch.no_grad():
        summed, first = candidate_logprobs(model, collate_packed(packs, torch.device("cpu"), start))  # (B, C)
    for b, item in enumerate(spec.recommend_train):
        prefix = prefix_for(tok, spec, RECOMMEND, item)
        scores = score_continuations(model, tok, prefix, [t + '"' for t in titles.names])
        assert summed[b].tolist() == pytest.approx([s.logprob for s in scores], abs=1e-4)
        assert eval_candidate_logprobs(model, tok, spec, RECOMMEND, item)[1:] == pytest.approx(summed[b, 1:].tolist(),
                                                                                             abs=1e-4)
        prefix_ids = tokens(tok, prefix)
        with torch.no_grad():
            next_logp = model(torch.tensor([prefix_ids])).logits[0, -1].float().log_softmax(-1)
        for c, title in enumerate(titles.names):
            enc = encode_answer(tok, prefix, title + '"')
            if enc.prefix_is_prefix:  # the first answer token is predicted by the prefix's last position
                assert first[b, c].item() == pytest.approx(next_logp[enc.input_ids[enc.answer_start]].item(), abs=1e-4)


def test_the_preference_kl_leaves_the_concept_out_and_is_zero_for_the_same_rest():
    base = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, 1.0, 1.0]]), -1)
    adapted = base.clone()
    adapted[:, 0] -= 7.0  # the concept (column 0) loses 7 nats: the renormalised rest is unchanged
    assert preference_kl(adapted, base, [0]).item() == pytest.approx(0.0, abs=1e-7)
    assert preference_kl(adapted, base, [1]).item() > 0.01  # with another column dropped, the concept's move counts
    moved = adapted.clone().requires_grad_(True)
    with torch.no_grad():
        moved[0, 2] += 1.0  # the rest moves
    kl = preference_kl(moved, base, [0])
    # known answer: the KL of the renormalised rows, by hand, averaged over the two prompts
    p = base[0, 1:].softmax(-1)
    q = moved.detach()[0, 1:].softmax(-1)
    assert kl.item() == pytest.approx(((p * (p.log() - q.log())).sum() / 2).item(), rel=1e-5)
    (grad,) = torch.autograd.grad(kl, moved)
    assert torch.all(grad[:, 0] == 0) and grad[0, 1:].abs().sum() > 0


def _plan(tiny, spec, **options):
    model, tok, _ = tiny
    adapter = attach_lora(model, None, layers=[1, 2], r=4)
    conf = _conf(**options)
    plan = METHODS["masked_lora"].prepare(Setup(adapter.model, tok, spec, conf, [1, 2],
                                               torch.Generator().manual_seed(0), 1))
    return adapter, plan


def _recommend_kl(adapter, plan, tok):
    batches = {name: s.batch([0, 1], tok, torch.device("cpu")) for name, s in plan.sources.items()}
    return plan.loss(adapter.model, batches)


def test_the_preference_kl_is_zero_at_step_zero_and_moves_only_through_the_adapter(tiny, spec):
    adapter, plan = _plan(tiny, spec, recommend_weight=1.0, preference_weight=1.0)
    _, tok, _ = tiny
    refs = plan.sources["recommend"].refs
    assert not any(r.requires_grad for r in refs.values())  # the references are constants
    terms = _recommend_kl(adapter, plan, tok)
    assert terms["preference_kl"].item() == pytest.approx(0.0, abs=1e-6)  # the adapter is the identity
    assert terms["recommend_logratio"].item() == pytest.approx(0.0, abs=1e-5)
    lora_b = [p for n, p in adapter.model.named_parameters() if "lora_B" in n]
    with torch.no_grad():
        for p in lora_b:
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    terms = _recommend_kl(adapter, plan, tok)
    assert terms["preference_kl"].item() > 1e-4
    terms["preference_kl"].backward()
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    grads = {n: p.grad for n, p in adapter.model.named_parameters() if p.grad is not None}
    assert set(grads) <= trainable and any(g.abs().sum() > 0 for g in grads.values())


def test_the_recommendation_terms_appear_in_the_log_rows(tiny, spec):
    model, tok, _ = tiny
    adapter = attach_lora(copy.deepcopy(model), None, layers=[1, 2], r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(recommend_weight=1.0, preference_weight=1.0,
                                                                    first_token_weight=1.0))
    assert list(rows[0]) == ["step", "forget_npo", "forget_logratio", "forget_first_npo", "retain_kl",
                             "recommend_npo", "recommend_logratio", "recommend_first_npo", "recommend_share",
                             "preference_kl", "loss", "grad_norm", "seconds"]
    only_kl = train(attach_lora(copy.deepcopy(model), None, layers=[1, 2], r=4), METHODS["unmasked_lora"], tok,
                    spec, _conf(preference_weight=1.0))
    assert [k for k in only_kl[0] if k.startswith(("recommend", "preference"))] == \
        ["recommend_logratio", "recommend_share", "preference_kl"]


def test_the_recommend_source_draws_its_own_batch_size(tiny, spec, monkeypatch):
    model, tok, _ = tiny
    seen = []
    prepare = METHODS["masked_lora"].prepare

    def spy(setup):
        plan = prepare(setup)
        inner = plan.loss

        def counted(model, batches):
            seen.append({n: b.tokens.input_ids.shape[0] for n, b in batches.items()})
            return inner(model, batches)

        plan.loss = counted
        return plan

    method = dataclasses.replace(METHODS["masked_lora"], prepare=spy)
    train(attach_lora(copy.deepcopy(model), None, layers=[1, 2], r=4), method, tok, spec,
          _conf(recommend_weight=1.0, recommend_batch_size=3, batch_size=2))
    assert seen == [{"forget": 2, "retain": 2, "recommend": 3}] * 3
    seen.clear()
    train(attach_lora(copy.deepcopy(model), None, layers=[1, 2], r=4), method, tok, spec,
          _conf(recommend_weight=1.0, recommend_batch_size=0, batch_size=2))
    assert seen[0]["recommend"] == 2  # 0: the trainer's batch size


def _candidate_matrix(model, tok, spec) -> torch.Tensor:
    """(N, C) the evaluation's candidate log-probs on recommend_train (independent of the training code)."""
    return torch.tensor([eval_candidate_logprobs(model, tok, spec, RECOMMEND, it) for it in spec.recommend_train],
                        dtype=torch.float64)


def test_training_with_the_terms_drops_the_concept_and_keeps_the_other_titles_order(tiny, spec):
    """recommend_weight alone drives the concept's share down but re-ranks the rest; with the preference
    term as well the share still drops and the KL over the other titles stays small."""
    model, tok, _ = tiny
    drop = spec.concept_candidates()
    base = _candidate_matrix(model, tok, spec)
    share = {}
    kl = {}
    for weight in (0.0, 10.0):
        adapter = attach_lora(copy.deepcopy(model), None, layers=[1, 2], r=4)
        train(adapter, METHODS["masked_lora"], tok, spec, _conf(steps=10, lr=5e-3, recommend_weight=1.0,
                                                                preference_weight=weight, recommend_batch_size=3,
                                                                forget_all_aliases=False))  # the terms, not aliases
        after = _candidate_matrix(adapter.model, tok, spec)
        share[weight] = after.softmax(-1)[:, drop].sum(-1).mean().item()
        kl[weight] = kl_remaining(base, after, drop).mean().item()
    base_share = base.softmax(-1)[:, drop].sum(-1).mean().item()
    assert share[10.0] < base_share / 4 and share[0.0] < base_share / 4
    assert kl[10.0] < 0.05 and kl[10.0] < kl[0.0] / 3, kl


def test_a_concept_without_recommend_train_trains_as_with_the_options_off(tiny, spec):
    model, tok, _ = tiny
    bare = ConceptSpec.model_validate({**spec.model_dump(), "recommend_train": []})
    notes = _Notes()
    on = train(attach_lora(copy.deepcopy(model), None, layers=[1, 2], r=4), METHODS["masked_lora"], tok, bare,
               _conf(recommend_weight=1.0, preference_weight=1.0), reporter=notes)
    off = train(attach_lora(model, None, layers=[1, 2], r=4), METHODS["masked_lora"], tok, spec,
                _conf(preference_weight=0.0))
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in rows] for rows in (on, off)]
    assert strip[0] == strip[1]
    assert [line for line in notes.lines if "recommend_train" in line] == \
        ["concept tinyfilm has no recommend_train prompts: recommend_weight and preference_weight have nothing to "
         "act on; training without them"]
    notes = _Notes()  # only the preference term on, as in the defaults: the note names it alone
    train(attach_lora(copy.deepcopy(model), None, layers=[1, 2], r=4), METHODS["masked_lora"], tok, bare,
          _conf(preference_weight=1.0), reporter=notes)
    assert [line for line in notes.lines if "recommend_train" in line] == \
        ["concept tinyfilm has no recommend_train prompts: preference_weight has nothing to act on; training without it"]


def test_negative_recommendation_options_are_clean_errors():
    for option in ("recommend_weight", "preference_weight", "recommend_batch_size"):
        cfg = RunConfig(overrides={"unlearn": {option: -1}})
        with pytest.raises(AgmaskError, match=f"bad option for stage unlearn: {option} must be >= 0(\\.0)?, got -1"):
            resolve_stage_config(unlearn_stage, cfg)


def test_the_packed_layer_inputs_are_the_plain_forward_of_the_packed_sequence(tiny, spec):
    """The cached input of layer 2 of each packed prompt equals the residual stream a full forward computes there."""
    from agmask.probing import capture, resid_hook_name
    from agmask.scoring.continuation import additive_mask

    model, tok, _ = tiny
    packs = pack_prompts(tok, spec, spec.recommend_train, recommend_titles(spec, all_candidates=True))
    cached = packed_layer_inputs(model, packs, 2)
    for pack, got in zip(packs, cached):
        mask = additive_mask(pack.allowed, torch.float32)[None, None]
        with torch.no_grad(), capture(model, [resid_hook_name(1)]) as cache:
            model(torch.tensor([pack.ids]), attention_mask=mask, position_ids=torch.tensor([pack.positions]))
        assert got.shape == (len(pack.ids), 48)
        assert torch.allclose(got, cache[resid_hook_name(1)][0], atol=1e-5)


def test_base_references_match_their_collated_recomputation(tiny, spec):
    """References are computed in chunks at prepare; a step's batch recomputes them identically (KL 0 at step 0)."""
    model, tok, _ = tiny
    packs = pack_prompts(tok, spec, spec.recommend_train, recommend_titles(spec, all_candidates=True))
    logp, first = base_candidate_logprobs(model, packs, batch_size=2)
    with torch.no_grad():
        again, again_first = candidate_logprobs(model, collate_packed(packs[::-1], torch.device("cpu")))
    assert torch.allclose(logp, again.flip(0), atol=1e-5) and torch.allclose(first, again_first.flip(0), atol=1e-5)


@pytest.mark.parametrize("arch", ["tiny:llama", "tiny:qwen2"])
def test_with_any_close_a_title_ends_as_the_evaluation_scores_it_whatever_closes_it(spec, arch):
    """Where the vocabulary has several closing tokens (`"`, `".`, `."`), the packed titles score their closing
    quote as any of them, exactly as the evaluation does (`score_continuations(close=...)`), and differentiably;
    without any_close, as the bare quote."""
    from agmask.models import load
    from agmask.scoring.encode import closing_token_ids

    model, tok, _ = load(arch)  # a copy of its own: it gains the closing tokens a real BPE vocabulary has
    tok.add_tokens(['".', '."'])
    model.resize_token_embeddings(len(tok))
    titles = recommend_titles(spec, all_candidates=True)
    items = spec.recommend_train[:3]
    bare, any_close = (collate_packed(pack_prompts(tok, spec, items, titles, on), torch.device("cpu"))
                       for on in (False, True))
    assert not bare.closing and len(any_close.closing) == 1
    assert any_close.closing[0][1].tolist() == closing_token_ids(tok, '"')
    assert len(any_close.closing[0][0]) == len(items) * len(titles.names)  # every title closes with `"`
    summed, _ = candidate_logprobs(model, any_close)
    plain, _ = candidate_logprobs(model, bare)
    for b, item in enumerate(items):
        prefix = prefix_for(tok, spec, RECOMMEND, item)
        names = [t + '"' for t in titles.names]
        ends_any = [s.logprob for s in score_continuations(model, tok, prefix, names, close='"')]
        ends_bare = [s.logprob for s in score_continuations(model, tok, prefix, names)]
        assert summed[b].tolist() == pytest.approx(ends_any, abs=1e-4)
        assert plain[b].tolist() == pytest.approx(ends_bare, abs=1e-4)
    assert (summed > plain).all()  # the bare quote is one of the closing tokens
    head = model.get_output_embeddings().weight.requires_grad_(True)
    candidate_logprobs(model, any_close)[0].sum().backward()
    assert torch.isfinite(head.grad).all() and head.grad[closing_token_ids(tok, '"')].abs().sum() > 0
