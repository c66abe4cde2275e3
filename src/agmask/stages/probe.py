"""Stage 2, probe: MLP neuron and residual-stream activations of every layer, for every question set.

Two positions per prompt: `last` (the last token of prompt + lead, which predicts the answer) and
`answer` (the mean over the answer tokens, real tokens only). `probe/activations.safetensors` holds
one (items, layers, dim) float16 tensor per `{set}.{position}.{kind}`; `probe/keys.json` documents it.
"""
from __future__ import annotations

from dataclasses import field
from pathlib import Path

import torch

from agmask.config import NonNegativeInt, PositiveInt, stage_options
from agmask.errors import StageError
from agmask.files import save_tensors, write_json
from agmask.probing import capture, mlp_hook_name, resid_hook_name
from agmask.scoring import QA_SETS, collate_answers, prefix_for
from agmask.scoring.logprobs import hidden_states

NAME = "probe"
DIR = "probe"
DEPENDS: tuple[str, ...] = ()
POSITIONS = {"last": "last token of the rendered prompt + lead (it predicts the first answer token)",
             "answer": "mean over the answer tokens (real tokens only)"}
KINDS = {"mlp": "MLP neuron activation = input of down_proj, dim = intermediate_size",
         "resid": "residual stream after the decoder layer, dim = hidden_size"}


@stage_options
class Config:
    batch_size: PositiveInt = field(default=8, metadata={"help": "prompts per forward pass"})
    max_items: NonNegativeInt = field(default=0, metadata={"help": "prompts per set (the first ones); 0 = all"})


PRESETS = {"demo": {"max_items": 12}, "full": {}}


def probe_set(model, tokenizer, spec, set_name: str, items, batch_size: int) -> dict[str, torch.Tensor]:
    """{'{set}.{position}.{kind}': (N, L, D)} for one prompt set."""
    if not items:
        raise StageError(f"prompt set {set_name} is empty: nothing to probe")
    n_layers = model.config.num_hidden_layers
    names = [mlp_hook_name(i) for i in range(n_layers)] + [resid_hook_name(i) for i in range(n_layers)]
    out: dict[str, list[torch.Tensor]] = {f"{set_name}.{p}.{k}": [] for p in POSITIONS for k in KINDS}
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        batch = collate_answers(tokenizer, [prefix_for(tokenizer, spec, set_name, it) for it in chunk],
                                [spec.answers_for(it)[0] for it in chunk])
        batch = batch.to(next(model.parameters()).device)
        answer_mask = batch.target_mask.roll(1, dims=1) * batch.attention_mask  # (B, T) 1 on answer tokens
        last_pos = batch.target_mask.argmax(1)  # (B,) first predicting position = last prefix token
        rows = torch.arange(len(chunk), device=batch.input_ids.device)
        with torch.no_grad(), capture(model, names) as cache:
            hidden_states(model, batch.input_ids, batch.attention_mask)
        for kind, hook in (("mlp", mlp_hook_name), ("resid", resid_hook_name)):
            # (B, L, T, D); under device_map="auto" layers sit on several GPUs: stack on the inputs' device
            acts = torch.stack([cache[hook(i)].to(rows.device) for i in range(n_layers)], dim=1).float()
            last = acts[rows, :, last_pos]  # (B, L, D)
            w = answer_mask[:, None, :, None].to(acts.dtype)  # (B, 1, T, 1)
            mean = (acts * w).sum(2) / w.sum(2).clamp(min=1)  # (B, L, D)
            out[f"{set_name}.last.{kind}"].append(last.half().cpu())
            out[f"{set_name}.answer.{kind}"].append(mean.half().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    model, tokenizer, info = session.model()
    spec = session.spec
    tensors, sets = {}, {}
    with session.reporter.task("probing activations", len(QA_SETS)) as advance:
        for set_name in QA_SETS:
            items = spec.items(set_name)[: conf.max_items or None]
            tensors.update(probe_set(model, tokenizer, spec, set_name, items, conf.batch_size))
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
