"""Attribution positions (answer | all | subject): batched scores against a per-sample, per-position loop."""
from __future__ import annotations

import pytest
import torch

from agmask.attribution import POSITIONS, neuron_stats
from agmask.attribution.positions import subject_token_mask
from agmask.concepts import load_concept
from agmask.errors import AgmaskError, StageError
from agmask.probing import capture, mlp_hook_name
from agmask.scoring import collate_answers, prefix_for, render_prompt
from agmask.scoring.encode import tokens
from agmask.scoring.logprobs import answer_logprobs


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _expected_positions(tok, spec, item, kind: str) -> tuple[list[int], list[int]]:
    """(joint token ids, the positions of `kind`) worked out without the module under test.

    The tiny chat template puts the user message right after `<|im_start|>user\\n`, and its tokenizer
    never merges across a newline or a special token, so the prompt's tokens are those of the prompt alone."""
    prefix = prefix_for(tok, spec, "forget_train", item)
    answer = spec.answers_for(item)[0]
    ids = tokens(tok, prefix + answer)
    header = tokens(tok, "<|im_start|>user\n")
    own = tokens(tok, item.prompt)
    assert ids[: len(header) + len(own)] == header + own  # the assumption above holds for this prompt
    answer_start = len(tokens(tok, prefix))
    assert ids[:answer_start] == tokens(tok, prefix)  # no merge at the prefix/answer boundary
    return ids, {"all": list(range(len(ids))),
                 "answer": list(range(answer_start - 1, len(ids) - 1)),  # t predicts t + 1
                 "subject": list(range(len(header), len(header) + len(own))),
                 "prompt": list(range(len(header), len(ids)))}[kind]


def test_subject_tokens_spell_the_prompt_and_nothing_of_the_template(tiny, spec):
    _, tok, _ = tiny
    for item in spec.forget_train + spec.retain_train:
        text = prefix_for(tok, spec, "retain_train", item) + "Rome"
        mask = subject_token_mask(tok, item.prompt, text)
        ids = torch.tensor(tokens(tok, text))
        assert mask.shape == ids.shape
        assert tok.decode(ids[mask.bool()]) == item.prompt


def test_subject_tokens_skip_a_system_prompt_that_repeats_the_question(tiny):
    from agmask.models.tiny import CHAT_TEMPLATE

    _, tok, _ = tiny
    prompt = "Which film has a spinning top?"
    # a template whose system message quotes the question before the user message does
    tok.chat_template = "<|im_start|>system\nAnswer: {{ messages[0]['content'] }}<|im_end|>\n" + CHAT_TEMPLATE
    try:
        text = render_prompt(tok, prompt) + 'The movie is "Inception'
        assert text.count(prompt) == 2
        mask = subject_token_mask(tok, prompt, text)
        ids = torch.tensor(tokens(tok, text))
        assert tok.decode(ids[mask.bool()]) == prompt
        assert "<|im_start|>user" in tok.decode(ids[: int(mask.nonzero()[0])])  # the user message's copy
    finally:
        tok.chat_template = CHAT_TEMPLATE


@pytest.mark.parametrize("kind", POSITIONS)
def test_batched_scores_equal_a_per_sample_per_position_loop(tiny, spec, kind):
    model, tok, info = tiny
    items = spec.forget_train + spec.forget_eval[:2]  # different lengths: the batch is padded
    batched = neuron_stats(model, tok, spec, "forget_train", items, batch_size=8, keep_per_sample=True, positions=kind)
    names = [mlp_hook_name(i) for i in range(info.num_layers)]
    norm_sum = torch.zeros(info.num_layers)
    for n, item in enumerate(items):
        ids, where = _expected_positions(tok, spec, item, kind)
        batch = collate_answers(tok, [prefix_for(tok, spec, "forget_train", item)], [spec.answers_for(item)[0]])
        assert batch.input_ids[0].tolist() == ids
        with torch.enable_grad(), capture(model, names, keep_grad=True) as cache:
            (-answer_logprobs(model, batch).sum()).backward()  # the loss: the answer only, whatever the positions
            for layer, name in enumerate(names):
                a, g = cache[name][0].detach(), cache[name].grad[0]  # (T, I)
                dot = torch.zeros(info.intermediate_size)
                sq = torch.zeros(info.intermediate_size)
                for t in where:  # one position at a time
                    dot += a[t] * g[t]
                    sq += g[t] * g[t]
                got_sal = batched.per_sample["saliency"][n // 8][n % 8, layer]
                got_fis = batched.per_sample["fisher"][n // 8][n % 8, layer]
                scale = max(1.0, float(sq.max()), float(dot.abs().max()))
                assert (got_sal - dot.abs()).abs().max() < 1e-5 * scale
                assert (got_fis - sq).abs().max() < 1e-5 * scale
                norm_sum[layer] += sq.sum().sqrt()
    assert torch.allclose(batched.layer_sensitivity, norm_sum / len(items), rtol=1e-4)


def test_all_positions_fisher_bounds_the_answer_and_subject_fisher(tiny, spec):
    model, tok, _ = tiny
    stats = {k: neuron_stats(model, tok, spec, "forget_train", spec.forget_train, positions=k).mean("fisher")
             for k in POSITIONS}
    # Fisher sums non-negative terms; answer and subject positions are subsets of prompt, prompt of all
    assert (stats["all"] >= stats["prompt"] - 1e-7).all() and (stats["prompt"] >= stats["answer"] - 1e-7).all()
    assert (stats["prompt"] >= stats["subject"] - 1e-7).all()
    assert (stats["all"] > stats["answer"] + 1e-7).any()  # the prompt's tokens add gradient mass
    assert stats["subject"].sum() > 0  # the answer loss reaches the prompt's tokens through attention


def test_unknown_positions_are_a_clean_error(tiny, spec):
    model, tok, _ = tiny
    with pytest.raises(StageError, match="unknown positions 'everywhere'"):
        neuron_stats(model, tok, spec, "forget_train", spec.forget_train, positions="everywhere")


def test_attribute_stage_option_is_checked():
    from agmask.config import RunConfig, resolve_stage_config
    from agmask.stages import attribute

    cfg = RunConfig(model="tiny:llama", concepts=["inception"], overrides={"attribute": {"positions": "all"}})
    assert resolve_stage_config(attribute, cfg).positions == "all"
    assert resolve_stage_config(attribute, RunConfig(model="tiny:llama", concepts=["inception"])).positions == "answer"
    bad = RunConfig(model="tiny:llama", concepts=["inception"], overrides={"attribute": {"positions": "tokens"}})
    with pytest.raises(AgmaskError, match="positions must be one of 'answer', 'all', 'subject' or 'prompt', got 'tokens'"):
        resolve_stage_config(attribute, bad)
