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
    ids = tokens(tok, prefixes[0])[:-1]
    m, layers = kv.longest(ids)
    assert m == len(ids) and len(kv) == 1
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


# ---- the prefix cache: longest stored prefix, cached forwards equal plain ones, work not repeated ----

def _layers(n: int, value: float = 0.0, n_layers: int = 2) -> list:
    """Fake per-layer keys/values of n positions: position p holds value + p."""
    pos = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1) + value
    return [(pos.clone(), -pos.clone()) for _ in range(n_layers)]


def test_longest_finds_the_longest_stored_prefix_and_slices_its_keys():
    kv = PrefixKV()
    kv.put([1, 2, 3, 4], _layers(4))
    kv.put([1, 2, 7], _layers(3, value=10))  # keeps only its own position: the first two are [1, 2, 3, 4]'s
    assert len(kv) == 2 and kv.tokens() == 5
    m, layers = kv.longest([1, 2, 3, 9])
    assert m == 3 and layers[0][0].flatten().tolist() == [0, 1, 2] and layers[1][1].flatten().tolist() == [0, -1, -2]
    m, layers = kv.longest([1, 2, 7, 7])
    assert m == 3 and layers[0][0].flatten().tolist() == [0, 1, 12]
    kv.put([1, 2, 7, 8, 9], _layers(5, value=20))  # a chain: [1, 2, 3, 4] -> [1, 2, 7] -> this
    assert kv.longest([1, 2, 7, 8, 9])[1][0][0].flatten().tolist() == [0, 1, 12, 23, 24] and kv.tokens() == 7
    view = kv.lookup_only()
    view.put([5, 6], _layers(2))
    assert kv.longest([5, 6]) == (0, None) and view.longest([1, 2, 3])[0] == 3
    assert kv.longest([1, 2, 3, 4, 5], limit=2)[0] == 2
    assert kv.longest([5, 1]) == (0, None) and kv.longest([]) == (0, None)
    kv.put([1, 2, 3], _layers(3, value=99))  # covered by a stored sequence: nothing new is kept
    assert len(kv) == 3 and kv.longest([1, 2, 3])[1][0][0].flatten().tolist() == [0, 1, 2]


def test_length_groups_keep_padding_small():
    from agmask.scoring.cached import length_groups

    assert length_groups([10, 9, 3, 0, 8, 2]) == [[0, 1, 4], [2], [5]]  # 3 < 0.8 x 10, 2 < 0.8 x 3
    assert length_groups([0, 0]) == [] and length_groups([5]) == [[0]]


class TokenCount:
    """Tokens through the decoder body while the block runs (a forward pre-hook)."""

    def __init__(self, model):
        from agmask.scoring.logprobs import decoder_and_head

        self.body, self.tokens, self.calls = decoder_and_head(model)[0], 0, 0

    def __enter__(self):
        def hook(module, args, kwargs):
            ids = kwargs.get("input_ids")
            self.tokens += ids.numel()
            self.calls += 1

        self.handle = self.body.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_run_cached_equals_a_plain_forward_and_runs_only_what_the_cache_lacks(tiny, spec):
    from agmask.scoring.cached import run_cached
    from agmask.scoring.logprobs import hidden_states

    model, tok, _ = tiny
    seqs = [tokens(tok, p) for p in _prefixes(tok, spec)[:5]]
    kv = PrefixKV()
    run_cached(model, [seqs[0][:7], seqs[1]], kv)  # something of the first two is stored
    with TokenCount(model) as count:
        run = run_cached(model, seqs, kv)
    assert run.starts[1] == len(seqs[1]) - 1  # stored whole: only its last token ran
    assert count.tokens < sum(len(s) for s in seqs)
    for i, seq in enumerate(seqs):
        ids = torch.tensor([seq])
        plain = hidden_states(model, ids, torch.ones_like(ids))[0]  # (T, H)
        got = torch.stack([run.position(i, t) for t in range(run.starts[i], len(seq))])
        assert torch.allclose(got, plain[run.starts[i]:], atol=1e-5), i
        assert kv.longest(seq)[0] == len(seq)  # every row is stored now
    with TokenCount(model) as count:
        again = run_cached(model, seqs, kv)
    assert count.tokens == len(seqs) and again.starts == [len(s) - 1 for s in seqs]


def test_scores_from_a_cached_prefix_equal_plain_scores(tiny, spec):
    model, tok, _ = tiny
    prefixes = _prefixes(tok, spec)[:4]
    continuations = ['Inception"', 'Memento"', 'The Prestige"']
    kv = PrefixKV()
    head = len(tokens(tok, "<|im_start|>user\n"))  # the chat template's opening, shared by every prompt
    full = {}
    for i, p in enumerate(prefixes):  # each prompt reuses the opening stored by the first
        with TokenCount(model) as count:
            cached = score_continuations(model, tok, p, continuations, kv=kv)
        with TokenCount(model) as plain_count:
            plain = score_continuations(model, tok, p, continuations)
        full[p] = plain_count.tokens
        assert [c.first_rank for c in cached] == [c.first_rank for c in plain]
        assert [c.logprob for c in cached] == pytest.approx([c.logprob for c in plain], abs=1e-5)
        assert count.tokens <= full[p] - (head if i else 0)
    with TokenCount(model) as count:  # scored before: only its last prompt token and the continuations' trie run
        score_continuations(model, tok, prefixes[0], continuations, kv=kv)
    assert count.tokens == full[prefixes[0]] - (len(tokens(tok, prefixes[0])) - 1)


def test_replies_of_several_lengths_in_one_batch_are_cut_at_their_own(tiny, spec):
    model, tok, _ = tiny
    prefixes = _prefixes(tok, spec)[:4]
    lengths = [3, 7, 5, 7]
    mixed = generate(model, tok, prefixes, max_new_tokens=lengths, batch_size=4)
    alone = [generate(model, tok, [p], max_new_tokens=n, batch_size=1)[0] for p, n in zip(prefixes, lengths)]
    assert mixed == alone
