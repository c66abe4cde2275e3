"""The variants `agmask compare` trains: each is an unlearning method's loss on a LoRA of the same targets,
rank, steps and seed, parameterised by a neuron mask.

Mask kinds (every mask is bool (layers, intermediate); a LoRA sits on the layers its mask touches):
  causal              mask.selection=causal on the run's attribution (the mask stage's function)
  saliency            mask.selection=score: today's top of the attribution score (the mask stage's function)
  reference           the mask the controls copy: causal or saliency (`compare.reference`)
  random_same_layers  the reference's count per layer, random units in the same layers (seeded)
  random_layers       the reference's counts per layer in randomly drawn layers (seeded)
  full_layers         every unit of the reference's layers
  unmasked            plain LoRA on the reference's layers (no mask)

The six default variants train masked_lora's loss on the six kinds above (issue 15's decisive
comparison). Every unlearning method is a variant too, under its own name (ga, npo, rmu, masked_refusal,
unmasked_lora, random_mask, masked_lora), on the mask its parameterisation names: `mask` -> reference,
`random` -> random_same_layers, `unmasked` -> unmasked; so the comparison the old bench script ran is
`compare.variants=[masked_lora, ga, npo, rmu, masked_refusal, unmasked_lora, random_mask]`.

The LoRA sits on the MLP projections only, so `full_layers` (every unit of the reference's layers) and
`unmasked` (no mask on the same layers) are the same parameterisation: at the same seed they train the
same adapter. `training_key` says so, and compare trains such a pair once (the second row is a copy
that names the first under `same_as`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from agmask.errors import StageError
from agmask.masking import full_layer_mask, layers_of, random_layers_mask, random_mask_like

DEFAULT_VARIANTS = ("causal", "saliency", "random_same_layers", "random_layers", "full_layers", "unmasked")
SELECTED = ("causal", "saliency")  # the masks computed from the attribution; every other kind derives from one
MASK_KINDS = (*SELECTED, "reference", "random_same_layers", "random_layers", "full_layers", "unmasked")
_BY_PARAMETERISATION = {"mask": "reference", "random": "random_same_layers", "unmasked": "unmasked"}


@dataclass(frozen=True)
class Variant:
    name: str
    method: str  # the unlearning method whose loss trains it (agmask.unlearn.METHODS)
    mask: str  # one of MASK_KINDS
    description: str


def variants() -> dict[str, Variant]:
    """Every variant by name: the mask variants (masked_lora's loss), then one per unlearning method."""
    from agmask.unlearn import METHODS

    out = {
        "causal": Variant("causal", "masked_lora", "causal", "masked_lora, causal mask (mask.selection=causal)"),
        "saliency": Variant("saliency", "masked_lora", "saliency", "masked_lora, attribution-score mask"),
        "random_same_layers": Variant("random_same_layers", "masked_lora", "random_same_layers",
                                      "masked_lora, random units, the reference's layers and counts"),
        "random_layers": Variant("random_layers", "masked_lora", "random_layers",
                                 "masked_lora, random units in random layers, the reference's counts"),
        "full_layers": Variant("full_layers", "masked_lora", "full_layers",
                               "masked_lora, every unit of the reference's layers"),
        "unmasked": Variant("unmasked", "masked_lora", "unmasked", "masked_lora's loss, plain LoRA on the "
                                                                   "reference's layers"),
    }
    for name, method in METHODS.items():
        kind = _BY_PARAMETERISATION[method.parameterisation]
        out.setdefault(name, Variant(name, name, kind, f"method {name} ({method.description}); mask: {kind}"))
    return out


def get_variant(name: str) -> Variant:
    known = variants()
    if name not in known:
        from agmask.config import nearest

        raise StageError(f"unknown compare variant {name!r}{nearest(name, known)} (choose {', '.join(known)})")
    return known[name]


def selected_needed(names: list[str], reference: str) -> list[str]:
    """Which of SELECTED the variants need: their own kind, or the reference for the kinds derived from it."""
    kinds = {get_variant(n).mask for n in names}
    need = {k for k in kinds if k in SELECTED}
    if kinds - set(SELECTED):
        need.add(reference)
    return [k for k in SELECTED if k in need]


def variant_mask(variant: Variant, selected: dict[str, torch.Tensor], reference: str,
                 seed: int) -> tuple[torch.Tensor | None, list[int]]:
    """(mask or None for a plain LoRA, the layers the LoRA adapts) of `variant` at `seed`.

    selected: the SELECTED masks computed for this run (at least those `selected_needed` names). The random
    kinds draw from a generator seeded with `seed`, so each seed trains a different random mask."""
    kind = variant.mask
    if kind in SELECTED:
        mask = selected[kind]
    else:
        ref = selected[reference]
        if kind == "reference":
            mask = ref
        elif kind == "random_same_layers":
            mask = random_mask_like(ref, torch.Generator().manual_seed(seed))
        elif kind == "random_layers":
            mask = random_layers_mask(ref, torch.Generator().manual_seed(seed))
        elif kind == "full_layers":
            mask = full_layer_mask(ref)
        elif kind == "unmasked":
            return None, layers_of(ref)
        else:
            raise ValueError(f"unknown mask kind {kind!r}")
    return mask, layers_of(mask)


def mask_summary(mask: torch.Tensor | None, layers: list[int]) -> dict:
    """What a row records about its parameterisation: layers, units per layer (None = every unit, unmasked)."""
    if mask is None:
        return {"layers": layers, "units": None, "per_layer": None}
    return {"layers": layers, "units": int(mask.sum()), "per_layer": {str(l): int(mask[l].sum()) for l in layers}}


def training_key(method: str, mask: torch.Tensor | None, layers: list[int]) -> str:
    """What decides the trained adapter besides the seed and the options: the method, the adapted layers and
    the mask, where a mask holding every unit of its layers counts as no mask (it restricts nothing)."""
    h = hashlib.sha256(f"{method}|{','.join(map(str, layers))}|".encode())
    if mask is not None and not bool(mask[layers].all()):
        h.update(mask.to(torch.uint8).contiguous().numpy().tobytes())
    return h.hexdigest()
