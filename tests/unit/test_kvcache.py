"""Prefix keys shared by scoring and generation: the same replies, one prefix pass, no hidden reuse."""
from __future__ import annotations

import pytest
import torch

from agmask.concepts import load_concept
from agmask.scoring import PrefixKV, generate, prefix_for, score_items
from agmask.scoring.continuation import score_continuations
from agmask.scoring.encode import tokens
from agmask.models.arch import decoder_layers


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _prefixes(tok, spec):
    return [prefix_for(tok, spec, "forget_eval", it.prompt) for it in spec.forget_eval + spec.forget_train]


def _plain(model, tok, prefixes, **kw):
    """HF generate from scratch, one prompt at a time: the reference."""
    return [generate(model, tok, [p], batch_size=1, kv=None, **kw)[0] for p in prefixes]


def test_replies_from_scored_prefixes_equal_plain_generation(tiny, spec):
    model, tok, _ = tiny
    prefixes = _prefixes(tok, spec)
    kv = PrefixKV()
    for p in prefixes:
        score_continuations(model, tok, p, ["Inception\"", "Memento\""], kv=kv)
    assert len(kv) == len(prefixes)
    assert generate(model, tok, prefixes, max_new_tokens=6, batch_size=3, kv=kv) == \
        _plain(model, tok, prefixes, max_new_tokens=6)


def test_samples_share_one_prefill_and_keep_the_seeded_draws(tiny, spec):
    model, tok, _ = tiny
    prefixes = _prefixes(tok, spec)[:4]
    kw = dict(max_new_tokens=5, do_sample=True, temperature=0.9, top_p=0.95, num_return_sequences=3, seed=7)
    with_kv = PrefixKV()
    for p in prefixes:
        score_continuations(model, tok, p, ["Inception\""], kv=with_kv)
    a = generate(model, tok, prefixes, batch_size=2, kv=with_kv, **kw)
    b = generate(model, tok, prefixes, batch_size=2, **kw)
    assert a == b and all(len(s) == 3 for s in a)


def test_score_items_with_replies_scores_exactly_as_without(tiny, spec):
    model, tok, _ = tiny
    plain = score_items(model, tok, spec, "forget_eval")
    both = score_items(model, tok, spec, "forget_eval", generation_tokens=4)
    assert [r.answer_logprob for r in plain] == [r.answer_logprob for r in both]
    assert [r.generation for r in both] == [g[0] for g in _plain(model, tok, _prefixes(tok, spec)[:len(both)],
                                                                  max_new_tokens=4)]


def test_a_missing_or_merged_prefix_falls_back_to_a_prefill(tiny, spec):
    model, tok, _ = tiny
    prefixes = _prefixes(tok, spec)[:3]
    kv = PrefixKV()
    score_continuations(model, tok, prefixes[0], ["x"], kv=kv)  # only the first prompt has stored keys
    ids, layers = kv.get(prefixes[0])
    assert ids == tokens(tok, prefixes[0])[:-1]
    assert len(layers) == len(decoder_layers(model)) and layers[0][0].shape[2] == len(ids)
    assert generate(model, tok, prefixes, max_new_tokens=4, batch_size=3, kv=kv) == \
        _plain(model, tok, prefixes, max_new_tokens=4)


def test_samples_equal_hf_generate_expanding_the_prompt_itself(tiny, spec):
    """HF's own path prefills every copy of the prompt; ours prefills once and copies the keys."""
    model, tok, _ = tiny
    prefix = _prefixes(tok, spec)[1]
    ids = torch.tensor([tokens(tok, prefix)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=5,
                             temperature=0.8, top_p=0.9, top_k=0, num_return_sequences=4,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    hf = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    ours = generate(model, tok, [prefix], max_new_tokens=5, do_sample=True, temperature=0.8, top_p=0.9,
                    num_return_sequences=4, seed=3)[0]
    assert ours == hf
