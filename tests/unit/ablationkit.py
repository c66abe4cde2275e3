"""Reference mean-ablation for tests: one prompt, one full forward, activations overwritten one entry at a time."""
from __future__ import annotations

import torch

from agmask.attribution.positions import position_mask
from agmask.models.arch import mlp_module
from agmask.scoring import collate_answers, prefix_for
from agmask.scoring.encode import closing_for
from agmask.scoring.logprobs import answer_logprobs


def direct_ablated_logprob(model, tok, spec, set_name, item, units: dict[int, list[int]], means, kind: str) -> float:
    """Answer log-prob (first alias + closing quote, scored as any closing token) of one item with `units` (layer -> unit ids) set to
    `means[layer, unit]` at the `kind` positions, from a plain forward of the whole prompt."""
    prefix = prefix_for(tok, spec, set_name, item)
    close = closing_for(spec.lead_for(set_name, item))
    answer = spec.answers_for(item)[0] + close
    batch = collate_answers(tok, [prefix], [answer], closes=[close])  # the quote as any token that closes it
    where = position_mask(tok, kind, batch, [item.prompt], [prefix + answer])[0].bool()  # (T,)
    handles = []
    for layer, idx in units.items():
        def hook(module, args, _layer=layer, _idx=idx):
            act = args[0].clone()  # (1, T, I)
            for t in torch.nonzero(where).flatten().tolist():
                for j in _idx:
                    act[0, t, j] = means[_layer, j]
            return (act,)
        handles.append(mlp_module(model, layer, "down").register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            return float(answer_logprobs(model, batch)[0])
    finally:
        for h in handles:
            h.remove()
