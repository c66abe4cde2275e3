"""Stage 2, probe: MLP neuron and residual-stream activations of every layer, for every question set.

Two positions per prompt: `last` (the last token of prompt + lead, which predicts the answer) and
`answer` (the mean over the answer tokens). `probe/activations.safetensors` holds one (items, layers,
dim) float16 tensor per `{set}.{position}.{kind}`; `probe/keys.json` documents it. Each prompt runs
alone from its last prompt token on: the tokens before it come from a prefix cache (the chat
template's opening runs once for the stage).
"""
from __future__ import annotations

from dataclasses import field
from pathlib import Path

import torch

from agmask.config import NonNegativeInt, stage_options
from agmask.errors import StageError
from agmask.files import save_tensors, write_json
from agmask.probing import capture, mlp_hook_name, resid_hook_name
from agmask.scoring import QA_SETS, PrefixKV, prefix_for
from agmask.scoring.cached import run_cached
from agmask.scoring.encode import encode_answer

NAME = "probe"
DIR = "probe"
DEPENDS: tuple[str, ...] = ()
POSITIONS = {"last": "last token of the rendered prompt + lead (it predicts the first answer token)",
             "answer": "mean over the answer tokens (real tokens only)"}
KINDS = {"mlp": "MLP neuron activation = input of down_proj, dim = intermediate_size",
         "resid": "residual stream after the decoder layer, dim = hidden_size"}


@stage_options
class Config:
    max_items: NonNegativeInt = field(default=0, metadata={"help": "prompts per set (the first ones); 0 = all"})


PRESETS = {"demo": {"max_items": 12}, "full": {}}


def probe_set(model, tokenizer, spec, set_name: str, items, kv: PrefixKV | None = None) -> dict[str, torch.Tensor]:
    """{'{set}.{position}.{kind}': (N, L, D)} for one prompt set.

    Each prompt + answer runs alone (no padding), from the last prompt token on: what `kv` holds before it
    (the chat template's opening every prompt shares, a prompt probed before) is not run again."""
    if not items:
        raise StageError(f"prompt set {set_name} is empty: nothing to probe")
    n_layers = model.config.num_hidden_layers
    names = [mlp_hook_name(i) for i in range(n_layers)] + [resid_hook_name(i) for i in range(n_layers)]
    out: dict[str, list[torch.Tensor]] = {f"{set_name}.{p}.{k}": [] for p in POSITIONS for k in KINDS}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for item in items:
        enc = encode_answer(tokenizer, prefix_for(tokenizer, spec, set_name, item), spec.answers_for(item)[0])
        last = enc.answer_start - 1  # the last prompt token: it predicts the first answer token
        with torch.no_grad(), capture(model, names) as cache:
            run = run_cached(model, [enc.input_ids], kv, need=[last], pad_id=pad)
        first = last - run.starts[0]  # computed positions start at run.starts[0]
        for kind, hook in (("mlp", mlp_hook_name), ("resid", resid_hook_name)):
            # (L, T, D) of the computed positions; under device_map="auto" layers sit on several GPUs
            acts = torch.stack([cache[hook(i)][0].to(run.hidden.device) for i in range(n_layers)]).float()
            out[f"{set_name}.last.{kind}"].append(acts[None, :, first].half().cpu())  # (1, L, D)
            out[f"{set_name}.answer.{kind}"].append(acts[None, :, first + 1 :].mean(2).half().cpu())  # answer tokens
    return {k: torch.cat(v) for k, v in out.items()}


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    model, tokenizer, info = session.model()
    spec = session.spec
    tensors, sets = {}, {}
    kv = PrefixKV()  # every prompt shares the chat template's opening: it runs once
    with session.reporter.task("probing activations", len(QA_SETS)) as advance:
        for set_name in QA_SETS:
            items = spec.items(set_name)[: conf.max_items or None]
            tensors.update(probe_set(model, tokenizer, spec, set_name, items, kv))
            sets[set_name] = {"n": len(items), "prompts": [it.prompt for it in items]}
            advance(1)
    save_tensors(Path(run_dir) / DIR / "activations.safetensors", tensors)
    write_json(Path(run_dir) / DIR / "keys.json", {
        "file": "activations.safetensors",
        "key": "{set}.{position}.{kind}",
        "shape": "(items, layers, dim), float16; item order = the set's order in the concept file",
        "positions": POSITIONS, "kinds": KINDS, "sets": sets,
        "num_layers": info.num_layers, "intermediate_size": info.intermediate_size, "hidden_size": info.hidden_size,
    })
