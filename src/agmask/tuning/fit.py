"""One trial's fit on half A: attribution, mask and training, as the attribute, mask and unlearn stages do them.

What does not change between trials is computed once: the neuron statistics per `attribute.positions`
(the expensive forward + backward passes), and each distinct mask. Training starts every trial from the
same seed on a fresh LoRA, which is removed afterwards: the session's model is the plain base again.
"""
from __future__ import annotations

import dataclasses
import json

import torch

from agmask.attribution import layer_rankings, neuron_stats, score_tensors
from agmask.masking import layers_of, random_mask_like
from agmask.progress import SILENT, Reporter
from agmask.stages import mask as mask_stage
from agmask.unlearn import get_method
from agmask.unlearn.trainer import train


class HalfAFit:
    """Fits trials on `fit_spec` (half A of the training sets, a training view)."""

    def __init__(self, session, fit_spec, reporter: Reporter = SILENT):
        self.session = session
        self.fit_spec = fit_spec
        self.reporter = reporter
        self._stats: dict[tuple, tuple] = {}
        self._masks: dict[str, mask_stage.Selection] = {}

    def stats(self, conf):
        """(forget, retain) NeuronStats of half A for an attribute Config (cached per positions and items)."""
        key = (conf.positions, conf.max_items, conf.batch_size, conf.all_aliases)
        if key not in self._stats:
            model, tokenizer, _ = self.session.model()
            forget = self.fit_spec.forget_train[: conf.max_items or None]
            retain = self.fit_spec.retain_train[: conf.max_items or None]
            self.reporter.log(f"tune: attribution on half A ({len(forget)} + {len(retain)} prompts, "
                              f"positions {conf.positions})")
            self._stats[key] = tuple(neuron_stats(model, tokenizer, self.fit_spec, name, items, conf.batch_size,
                                                  positions=conf.positions, all_aliases=aliases)
                                     for name, items, aliases in (("forget_train", forget, conf.all_aliases),
                                                                  ("retain_train", retain, False)))
        return self._stats[key]

    def mask(self, attribute_conf, mask_conf) -> mask_stage.Selection:
        """The mask the mask stage would choose from half A's attribution (cached per distinct setting)."""
        key = json.dumps([dataclasses.asdict(attribute_conf), dataclasses.asdict(mask_conf)], sort_keys=True)
        if key not in self._masks:
            forget, retain = self.stats(attribute_conf)
            scores = score_tensors(forget, retain, attribute_conf.retain_weight)
            rankings = layer_rankings(forget.layer_sensitivity, scores["combined"], attribute_conf.top_k)
            causal = None
            if mask_conf.selection == "causal":  # measured on half A only
                model, tokenizer, _ = self.session.model()
                causal = (model, tokenizer, self.fit_spec, SILENT)
            self._masks[key] = mask_stage.select(mask_conf, scores[mask_conf.score], rankings, self.session.cfg.seed,
                                                 self.reporter.log, causal)
        return self._masks[key]

    def train(self, selection: mask_stage.Selection, unlearn_conf, measure):
        """Train a fresh adapter on half A under `unlearn_conf`, call `measure(model)` on it, remove it; returns
        (training log rows, what `measure` returned)."""
        from agmask.lora import masked_lora

        session, cfg = self.session, self.session.cfg
        method = get_method(unlearn_conf.method)
        param = {"mask": selection.mask, "unmasked": None,
                 "random": random_mask_like(selection.mask, torch.Generator().manual_seed(cfg.seed))}
        model, tokenizer, _ = session.model()
        base = session.with_prior_adapters(model)
        with masked_lora(base, param[method.parameterisation], layers=layers_of(selection.mask), r=unlearn_conf.r,
                         alpha=unlearn_conf.alpha, name=session.spec.name, seed=cfg.seed) as adapter:
            try:
                rows = train(adapter, method, tokenizer, self.fit_spec, unlearn_conf, seed=cfg.seed, device=cfg.device,
                             reporter=self.reporter, gradient_checkpointing=cfg.gradient_checkpointing)
                result = measure(adapter.model)
            finally:
                session.drop_adapters(adapter.model)  # the session's model is the plain base again
        return rows, result
