"""A tiny random model with a real model's tokenizer and chat template: the real prompts' token counts in seconds.

    python bench/proxy_model.py [--model embedded:qwen2.5-coder-0.5b-instruct] [--out DIR]

Writes a Hugging Face model directory (config, random weights, the real tokenizer, chat template and generation
config) that any `--model DIR` takes. Its answers mean nothing, but every prompt, system turn and lead has
the real tokenizer's length, so `bench/forward_counts.py --model DIR` counts the forward work of a real run
(prefill and decode tokens per stage and metric) without running the real model. Replies of a random model
rarely stop early, so decode counts are the configured maxima (an upper bound of the real ones).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

SHAPES = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16)
COPIED = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
          "special_tokens_map.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct",
                    help="whose tokenizer: an embedded model or a model directory")
    ap.add_argument("--out", type=Path, default=None, help="default: /tmp/agmask-proxy-<model name>")
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if args.model.startswith("embedded:"):
        from agmask.models.embedded import ensure_cached, lookup

        src = ensure_cached(lookup(args.model.removeprefix("embedded:")))  # converted once, then cached
    else:
        src = Path(args.model)
    if not (src / "config.json").is_file():
        sys.exit(f"{src} is not a model directory (no config.json): give an embedded model or a directory")
    out = args.out or Path(f"/tmp/agmask-proxy-{src.name}")
    out.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.from_pretrained(src)
    for key, value in SHAPES.items():
        setattr(config, key, value)
    if getattr(config, "layer_types", None):  # one entry per layer: keep the first kinds
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.save_pretrained(out)
    for name in COPIED:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    print(out)


if __name__ == "__main__":
    main()
