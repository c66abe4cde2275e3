"""Training batches and the frozen-base references they are compared with (computed once).

forget:  prompt + lead + concept answer (+ closing quote)  -> the concept's own answer probability
target:  prompt (no lead) + forget target + end of turn     -> optional refusal CE
retain:  prompt + lead + answer                             -> KL to the frozen base at the answer positions
(forget and retain examples can also be built under every answer lead the training sets use)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from agmask.models.arch import decoder_layers
from agmask.probing import capture, resid_hook_name
from agmask.scoring import collate_answers, render_prompt
from agmask.scoring.distinct import answer_tokens_and_offset, others_than
from agmask.scoring.encode import AnswerBatch, closing_for
from agmask.scoring.logprobs import decoder_and_head, hidden_states
from agmask.unlearn.objectives import answer_and_first_logprob, first_answer_token


@dataclass
class Example:
    prefix: str
    answer: str
    close: str = ""  # the closing quote `answer` ends with, scored as any token that closes it ("": the bare tokens)


def _examples(tokenizer, spec, set_name: str, items, answers_of, leads: list[str] | None,
              split=None, any_close: bool = False) -> list[Example]:
    """One example per (item, answer) under the item's own lead or, with `leads`, one per (lead, item, answer),
    lead-major; `answers_of(item)` lists the item's answers (one, or every alias), each followed by its lead's
    closing quote. `split(lead, answer)`, if given, returns (text of the answer moved to the end of the prefix,
    the rest of the answer). `any_close`: the closing quote is scored as any token that closes the answer."""
    def examples(item, lead: str) -> list[Example]:
        prefix, close = render_prompt(tokenizer, item.prompt) + lead, closing_for(lead)
        out = []
        for answer in answers_of(item):
            moved, rest = split(lead, answer) if split else ("", answer)
            out.append(Example(prefix + moved, rest + close, close if any_close else ""))
        return out

    if not leads:
        return [e for it in items for e in examples(it, spec.lead_for(set_name, it))]
    return [e for lead in leads for it in items for e in examples(it, lead)]


def forget_answers(spec, item, all_aliases: bool = True) -> list[str]:
    """The answers a forget prompt trains against: every alias of the concept (the evaluation scores the
    max over aliases, so an alias left out stays reachable), or with `all_aliases` False the first alone."""
    aliases = spec.answers_for(item)
    return aliases if all_aliases else aliases[:1]


def forget_examples(tokenizer, spec, items, leads: list[str] | None = None, all_aliases: bool = True,
                    from_distinguishing_token: bool = True, any_close: bool = True) -> list[Example]:
    """The concept's own answers after each forget prompt (its lead, or every lead in `leads`): one example per
    alias, or per item with `all_aliases` False. With `from_distinguishing_token`, an answer whose first tokens
    also start another known answer (`The` of `The Beatles` among `The ...` bands) has them moved into the
    prefix: the forget terms start at its first distinguishing token and leave the shared start alone. With
    `any_close`, the answer's end is scored as any token that closes it (`".` as much as `"`), so the forget
    terms cannot lower it by moving the model to another punctuation."""
    split = (lambda lead, answer: shared_start(tokenizer, spec, lead, answer)) if from_distinguishing_token else None
    return _examples(tokenizer, spec, "forget_train", items, lambda it: forget_answers(spec, it, all_aliases), leads,
                     split=split, any_close=any_close)


def shared_start(tokenizer, spec, lead: str, answer: str) -> tuple[str, str]:
    """(the text of `answer`'s leading tokens after `lead` that another known answer starts with too, the rest);
    ("", answer) when its first token is its own. `answer` is bare: the lead's closing quote comes after."""
    own, offset = answer_tokens_and_offset(tokenizer, lead, answer, others_than(spec, answer), closing_for(lead),
                                           initials=False)  # an initial stays in the answer (scoring.distinct)
    if offset == 0:
        return "", answer
    shared = tokenizer.decode(own[:offset])
    if not shared or not answer.startswith(shared) or len(shared) >= len(answer):
        return "", answer  # the shared tokens do not decode to a prefix of the text: keep the whole answer
    return shared, answer[len(shared):]


def training_leads(spec, forget_items, retain_items) -> list[str]:
    """Every answer lead the training sets use (forget_train's first, then retain_train's), each once."""
    leads = [spec.lead_for("forget_train", it) for it in forget_items] + \
            [spec.lead_for("retain_train", it) for it in retain_items]
    return list(dict.fromkeys(lead for lead in leads if lead))


def target_examples(tokenizer, spec, items) -> list[Example]:
    end = tokenizer.eos_token or ""
    return [Example(render_prompt(tokenizer, it.prompt), spec.forget_target + end) for it in items]


def retain_examples(tokenizer, spec, items, leads: list[str] | None = None) -> list[Example]:
    """Each retain prompt's own answer (its lead, or every lead in `leads`)."""
    return _examples(tokenizer, spec, "retain_train", items, lambda it: [it.answer], leads)


def _training_items(spec, conf) -> tuple[list, list, list[str]]:
    """forget_train (the first `conf.max_forget` items, or all), retain_train, and every lead they use."""
    forget_items, retain_items = list(spec.forget_train[: conf.max_forget or None]), list(spec.retain_train)
    return forget_items, retain_items, training_leads(spec, forget_items, retain_items)


def forget_set(tokenizer, spec, conf) -> list[Example]:
    """The forget examples the options ask for: each prompt under its own lead, or under every training lead."""
    items, _, leads = _training_items(spec, conf)
    return forget_examples(tokenizer, spec, items, leads if conf.forget_all_leads else None, conf.forget_all_aliases,
                           conf.forget_from_distinguishing_token, conf.forget_any_close)


def target_set(tokenizer, spec, conf) -> list[Example]:
    """The refusal example of each forget prompt, lined up with `forget_set` (the target has no lead and no
    alias: the same example per item, repeated once per alias, and once per lead when the forget set has every
    lead)."""
    items, _, leads = _training_items(spec, conf)
    per_item = [e for it, e in zip(items, target_examples(tokenizer, spec, items))
                for _ in forget_answers(spec, it, conf.forget_all_aliases)]
    return per_item * (max(1, len(leads)) if conf.forget_all_leads else 1)


def retain_set(tokenizer, spec, conf) -> list[Example]:
    """The retain examples the options ask for: each prompt under its own lead, or under every training lead."""
    _, items, leads = _training_items(spec, conf)
    return retain_examples(tokenizer, spec, items, leads if conf.retain_all_leads else None)


def first_answer_tokens(tokenizer, examples: list[Example]) -> torch.Tensor:
    """The distinct token ids that start the examples' answers (right after their prefixes)."""
    batch = collate_answers(tokenizer, [e.prefix for e in examples], [e.answer for e in examples])
    return first_answer_token(batch.targets, batch).unique()


def collate(tokenizer, examples: list[Example], device, start: tuple[int, list[torch.Tensor]] | None = None) -> AnswerBatch:
    """A right-padded batch; with `start = (layer, per-example cached inputs of that layer)` the frozen
    layers below `layer` are skipped (their output is taken from the cache)."""
    batch = collate_answers(tokenizer, [e.prefix for e in examples], [e.answer for e in examples],
                            [e.close for e in examples])
    if start is not None:
        layer, cached = start
        hidden = torch.zeros(*batch.input_ids.shape, cached[0].shape[-1], dtype=cached[0].dtype)  # (B, T, H)
        for i, h in enumerate(cached):
            hidden[i, : h.shape[0]] = h
        batch.start_layer, batch.start_hidden = layer, hidden
    return batch.to(device)


class _StopForward(Exception):
    """Raised by a hook once the needed layer has run: the layers above it are never computed."""


def input_of_layer(model: nn.Module, layer: int, forward: Callable[[], object]) -> torch.Tensor:
    """(B, T, H) the residual stream entering `layer` (after layer - 1) in the forward that `forward()` runs;
    the layers from `layer` up are never computed (a hook stops the forward, and is removed)."""
    seen: list[torch.Tensor] = []

    def stop(module, args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = decoder_layers(model)[layer - 1].register_forward_hook(stop)
    try:
        forward()
    except _StopForward:
        pass
    finally:
        handle.remove()
    return seen[0]


@torch.no_grad()
def layer_inputs(model: nn.Module, tokenizer, examples: list[Example], layer: int, batch_size: int = 8) -> list[torch.Tensor]:
    """Per example, (T_i, H): the residual stream entering `layer`, i.e. after layer - 1.

    Valid for the whole training run when every trainable weight sits in `layer` or above. The forward
    stops after layer - 1 (the layers above are not run).
    """
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for lo in range(0, len(examples), batch_size):
        batch = collate(tokenizer, examples[lo : lo + batch_size], device)
        resid = input_of_layer(model, layer, lambda: hidden_states(model, batch.input_ids, batch.attention_mask))
        out += [resid[i, : int(n)].cpu() for i, n in enumerate(batch.attention_mask.sum(1))]  # resid: (B, T, H)
    return out


@torch.no_grad()
def base_answer_logprobs(model: nn.Module, tokenizer, examples: list[Example], batch_size: int = 8,
                         start: tuple[int, list[torch.Tensor]] | None = None) -> torch.Tensor:
    """(N, 2) per example: summed answer log-prob and the answer's first-token log-prob, under the model
    as it is (call it on the frozen base).

    start: (layer, per-example inputs of that layer from `layer_inputs`): the layers below are skipped."""
    device = next(model.parameters()).device
    out = [torch.stack(answer_and_first_logprob(model, collate(tokenizer, examples[i : i + batch_size], device,
                                                               _part(start, i, batch_size))), -1).float().cpu()
           for i in range(0, len(examples), batch_size)]
    return torch.cat(out)


def _part(start: tuple[int, list[torch.Tensor]] | None, lo: int, n: int) -> tuple[int, list[torch.Tensor]] | None:
    return None if start is None else (start[0], start[1][lo : lo + n])


@torch.no_grad()
def base_answer_distributions(model: nn.Module, tokenizer, examples: list[Example], batch_size: int = 8,
                              start: tuple[int, list[torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """Per example, (n_answer_positions, V) log-softmax of the base at its answer-predicting positions."""
    device = next(model.parameters()).device
    _, head = decoder_and_head(model)
    out = []
    for lo in range(0, len(examples), batch_size):
        batch = collate(tokenizer, examples[lo : lo + batch_size], device, _part(start, lo, batch_size))
        hidden = hidden_states(model, batch.input_ids, batch.attention_mask, batch.start_layer,
                               batch.start_hidden)  # (B, T, H), right padded
        where = batch.target_mask.bool() & batch.attention_mask.bool()
        out += [head(hidden[i][where[i]]).float().log_softmax(-1).cpu() for i in range(len(where))]
    return out


@torch.no_grad()
def base_start_distributions(model: nn.Module, tokenizer, examples: list[Example], batch_size: int = 8,
                             start: tuple[int, list[torch.Tensor]] | None = None) -> torch.Tensor:
    """(N, V) log-softmax of the base at each example's first answer-predicting position (where the answer
    starts)."""
    return torch.stack([d[0] for d in base_answer_distributions(model, tokenizer, examples, batch_size, start)])


@torch.no_grad()
def base_residuals(model: nn.Module, tokenizer, examples: list[Example], layer: int, batch_size: int = 8) -> list[torch.Tensor]:
    """Per example, (n_answer_positions, H) residual stream after `layer` (RMU's retain reference)."""
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(examples), batch_size):
        batch = collate(tokenizer, examples[lo : lo + batch_size], device)
        with capture(model, [resid_hook_name(layer)]) as cache:
            hidden_states(model, batch.input_ids, batch.attention_mask)
        resid = cache[resid_hook_name(layer)]
        where = (batch.target_mask.bool() & batch.attention_mask.bool()).to(resid.device)
        out += [resid[i][where[i]].float().cpu() for i in range(len(where))]
    return out
