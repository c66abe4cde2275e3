"""The evaluation does each piece of model work once: a prompt's prefix runs once per model variant (later
metrics start from its cached keys), a reply or a score asked for twice is computed once, and what comes
from the cache equals what a plain forward computes."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from agmask.concepts import load_concept
from agmask.evaluate import EvalConfig, EvalContext
from agmask.evaluate.internals import answer_position_logprobs, last_token_resid
from agmask.evaluate.metrics_forget import adversarial_prompts, generations
from agmask.evaluate.metrics_internal import activation_shift, logit_lens
from agmask.scoring import PrefixKV, prefix_for, score_items
from agmask.scoring.encode import encode_answer, tokens
from evalkit import add_adapter

CFG = EvalConfig(generation_tokens=6, free_generation_tokens=8, batch_size=3, bootstrap_resamples=99)


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


class Forwards:
    """(batch, tokens) of every decoder-body forward while the block runs, split by model variant."""

    def __init__(self, model):
        from agmask.scoring.logprobs import decoder_and_head

        self.model, self.body = model, decoder_and_head(model)[0]
        self.calls: dict[str, list[tuple[int, int]]] = {"base": [], "adapted": []}

    def __enter__(self):
        from agmask.evaluate.quantize import lora_layers

        def hook(module, args, kwargs):
            which = "base" if all(layer.disable_adapters for layer in lora_layers(self.model)) else "adapted"
            self.calls[which].append(tuple(kwargs["input_ids"].shape))

        self.handle = self.body.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_after_the_replies_the_residual_metrics_run_one_token_per_prompt(tiny, spec, tmp_path):
    model, tok, _ = tiny
    ctx = EvalContext(add_adapter(model, [0, 1], std=0.3), tok, spec, CFG, tmp_path)
    generations(ctx)  # scores and replies of every evaluation set: each prompt's keys are cached
    with Forwards(ctx.model) as fwd:
        activation_shift(ctx)
        logit_lens(ctx)
    distinct = {tuple(tokens(tok, ctx.prefix(s, it, "lead"))) for s in ("forget_eval", "retain_eval", *CFG.lens_sets)
                for _, it in ctx.items(s)}
    for which in ("base", "adapted"):  # the last prompt token only, once per distinct prompt
        assert fwd.calls[which] == [(1, 1)] * len(distinct), which


def test_a_reply_or_a_score_asked_for_again_runs_nothing(tiny, spec, tmp_path):
    model, tok, _ = tiny
    ctx = EvalContext(add_adapter(model, [0], std=0.3), tok, spec, CFG, tmp_path)
    generations(ctx)
    fams, specs = adversarial_prompts(ctx)
    language = fams["language"][0]
    with Forwards(ctx.model) as fwd:
        for which in ("base", "adapted"):
            ctx.generations("neighbors", which, "free")  # not in the plan: generated now
            ctx.generations("probes", which, "free")  # in the plan: made already
            ctx.scores("forget_eval", which)
            row = ctx.score_row(which, specs["language"], "forget_eval", language.item())
            same = next(r for r in ctx.scores("forget_eval", which) if r["prompt"] == language.prompt)
            assert row["answer_logprob"] == same["answer_logprob"] and row["mc_share"] == same["mc_share"]
    n = len(ctx.items("neighbors"))  # only the neighbours' free replies were new: one prefill, then decoding
    for which in ("base", "adapted"):
        prefill = [c for c in fwd.calls[which] if c[1] > 1]
        assert len(prefill) <= 2 and all(b <= n for b, _ in fwd.calls[which]), which


def test_kl_and_residual_inputs_from_the_cache_equal_plain_forwards(tiny, spec):
    model, tok, _ = tiny
    items = spec.neighbors
    prefixes = [prefix_for(tok, spec, "neighbors", it) for it in items]
    replies = [f"{it.answer} is my answer" for it in items]
    kv = PrefixKV()
    score_items(model, tok, spec, "neighbors", items, kv=kv)  # the prefixes' keys are cached now
    plain_lp, plain_rows = answer_position_logprobs(model, tok, prefixes, replies)
    with Forwards(model) as fwd:
        lp, rows = answer_position_logprobs(model, tok, prefixes, replies, kv)
    assert torch.equal(rows, plain_rows) and torch.allclose(lp, plain_lp, atol=1e-5)
    spans = [len(e.input_ids) - e.answer_start for e in (encode_answer(tok, p, r) for p, r in zip(prefixes, replies))]
    assert max(t for _, t in fwd.calls["base"]) <= max(spans) < min(len(tokens(tok, p)) for p in prefixes)  # no prefix

    ids = [tokens(tok, p) for p in prefixes]
    assert torch.allclose(last_token_resid(model, ids, 0, kv=kv), last_token_resid(model, ids, 0), atol=1e-4)


def test_one_batched_generation_serves_replies_of_several_lengths(tiny, spec, tmp_path):
    model, tok, _ = tiny
    cfg = dataclasses.replace(CFG, generation_batch_size=64)
    ctx = EvalContext(add_adapter(model, [0], std=0.3), tok, spec, cfg, tmp_path)
    with Forwards(ctx.model) as fwd:
        generations(ctx)
    decode_steps = [c for c in fwd.calls["adapted"] if c[1] == 1]
    assert len(decode_steps) == max(CFG.generation_tokens, CFG.free_generation_tokens)  # one batch for every reply
    alone = EvalContext(ctx.model, tok, spec, cfg, tmp_path)
    for set_name, mode in (("probes", "free"), ("forget_eval", "lead")):  # the same replies, generated set by set
        assert alone.generations(set_name, "adapted", mode) == ctx.generations(set_name, "adapted", mode)
