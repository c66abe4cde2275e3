"""What a method hands the trainer: its data sources and its loss (a `Plan`), and the standard sources.

A method's `prepare(setup)` runs once, before the first step, while the new adapter is still the
identity (LoRA B is zero at init): references computed there are the model's own values before this
adapter trains. It returns a `Plan`: named `Source`s (examples + per-example references) and a loss.
Every step the trainer draws `conf.batch_size` examples from each source (or the source's own
`batch_size`), keeps this process's shard, collates each source's shard into a `Batch` and calls
`plan.loss(model, batches)`. Sources that share a `draw` key take the same indices every step, so
their examples line up (the refusal target of each forget prompt). A new data source (another prompt set, another reference) joins a method as one more
`Source` in its `prepare` and one more term in its loss; the trainer does not change. A source may
draw its own number of examples per step (`batch_size`), and a source of other examples than
prompt + answer overrides `collate` (the recommendation prompts, `agmask.unlearn.candidates`).

Loss terms are means over the samples of a batch (per sample first): every process's shard must be the
same share of every source's batch (the trainer checks it), so the shards' gradients add up to the
whole batch's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from agmask.progress import SILENT, Reporter
from agmask.unlearn import data
from agmask.unlearn.data import Example

Reference = torch.Tensor | list[torch.Tensor]  # (N, ...) tensor, or one tensor per example


@dataclass
class Batch:
    """One step's shard of a source: the collated examples and their references, in the same order."""

    tokens: Any  # an AnswerBatch (right padded), or what the source's `collate` builds; on the model's device
    refs: dict[str, Reference]


@dataclass
class Source:
    """Training examples a method draws a batch of every step, with references computed once."""

    examples: list[Example]  # or what an overriding `collate` takes (packed prompts: agmask.unlearn.candidates)
    draw: str  # sources with the same draw take the same indices every step (their examples line up)
    start: tuple[int, list[torch.Tensor]] | None = None  # (layer, per-example (T_i, H) input of that layer)
    refs: dict[str, Reference] = field(default_factory=dict)  # per example, indexed like `examples`
    batch_size: int | None = None  # examples drawn per step; None: conf.batch_size
    batch_option: str = "batch_size"  # the unlearn option that sets `batch_size` (named in errors)

    def batch(self, idx: list[int], tokenizer, device) -> Batch:
        start = None if self.start is None else (self.start[0], [self.start[1][i] for i in idx])
        tokens = self.collate(tokenizer, [self.examples[i] for i in idx], device, start)
        return Batch(tokens, {name: _take(ref, idx, device) for name, ref in self.refs.items()})

    def collate(self, tokenizer, examples: list, device, start: tuple[int, list[torch.Tensor]] | None):
        """The examples as the loss reads them: an `AnswerBatch`; a source of other examples overrides this."""
        return data.collate(tokenizer, examples, device, start)


def _take(ref: Reference, idx: list[int], device) -> Reference:
    """The references of examples `idx`: a tensor's rows on `device`; a list's items as they are."""
    if isinstance(ref, torch.Tensor):
        return ref[idx].to(device)
    return [ref[i] for i in idx]


Loss = Callable[[nn.Module, dict[str, Batch]], dict[str, torch.Tensor]]  # terms; "loss" is minimised


@dataclass
class Plan:
    sources: dict[str, Source]
    loss: Loss
    early_stop_term: str | None = None  # a logged term (log-ratio, nats) that `conf.early_stop_nats` watches


@dataclass
class Setup:
    """What a method's `prepare` may use: the model under training, its data and options, a seeded generator."""

    model: nn.Module  # the PEFT model; the new adapter is still the identity
    tokenizer: Any
    spec: Any  # ConceptSpec
    conf: Any  # the unlearn stage's Config
    layers: list[int]  # the adapted layers
    generator: torch.Generator  # a method's own random draws come before the trainer's batch orders
    cached_layer: int = 0  # > 0: the frozen layers below it run once here, not every step
    reporter: Reporter = SILENT  # a method's notes (an option that has no data to act on, ...)

    def source(self, examples: list[Example], draw: str, **refs: Reference) -> Source:
        """A source of `examples`; with a cached layer, its input for each example computed now."""
        start = None
        if self.cached_layer > 0:
            start = (self.cached_layer, data.layer_inputs(self.model, self.tokenizer, examples, self.cached_layer))
        return Source(list(examples), draw, start, dict(refs))


# The standard sources. The forget prompts draw "forget", the retain prompts "retain".

def forget_source(setup: Setup, references: bool = True) -> Source:
    """The concept's answer after each forget prompt; with `references`, the model's summed answer log-prob
    ("answer_logprob", (N,)) and its first answer token's log-prob ("first_logprob", (N,))."""
    source = setup.source(data.forget_set(setup.tokenizer, setup.spec, setup.conf), draw="forget")
    if references:
        ref = data.base_answer_logprobs(setup.model, setup.tokenizer, source.examples, start=source.start)  # (N, 2)
        source.refs.update(answer_logprob=ref[:, 0], first_logprob=ref[:, 1])
    return source


def target_source(setup: Setup) -> Source:
    """The forget target (refusal) after each forget prompt, lined up with `forget_source` (same draw)."""
    return setup.source(data.target_set(setup.tokenizer, setup.spec, setup.conf), draw="forget")


def retain_source(setup: Setup) -> Source:
    """Each retain prompt's own answer, with the model's log-softmax at its answer positions ("distribution",
    one (n_answer_positions, V) tensor per example): the KL anchor."""
    source = setup.source(data.retain_set(setup.tokenizer, setup.spec, setup.conf), draw="retain")
    source.refs["distribution"] = data.base_answer_distributions(setup.model, setup.tokenizer, source.examples,
                                                                 start=source.start)
    return source
