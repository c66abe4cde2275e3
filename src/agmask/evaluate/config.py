"""Options of the evaluation (the `evaluate` stage's Config) and its budget presets."""
from __future__ import annotations

from dataclasses import field

from agmask.config import stage_options

EVAL_QA_SETS = ("forget_eval", "probes", "neighbors", "retain_eval")  # the evaluation sets; never the train sets


@stage_options
class EvalConfig:
    max_items: int = field(default=0, metadata={"help": "items per evaluation set (spread over families); 0 = all"})
    adversarial_per_family: int = field(default=0, metadata={"help": "adversarial prompts per family; 0 = all"})
    generation_tokens: int = field(default=32, metadata={
        "help": "greedy reply length after the lead; equal to the baseline's, the base replies are reused"})
    free_generation_tokens: int = field(default=48, metadata={
        "help": "free reply length (no lead) on probes and retain_eval: facts recalled, fluency"})
    batch_size: int = field(default=8, metadata={"help": "KL and residual batch"})
    generation_batch_size: int = field(default=32, metadata={
        "help": "greedy replies per generation batch, over every set (decoding reads every weight once per batch)"})
    corpus_tokens: int = field(default=0, metadata={"help": "general-text tokens scored; 0 = the whole corpus"})
    corpus_window: int = field(default=256, metadata={"help": "tokens per general-text window"})
    few_shot: int = field(default=3, metadata={"help": "neighbour Q/A pairs before the question (in-context family)"})
    quant_bits: tuple[int, ...] = field(default=(8, 4), metadata={"help": "round-to-nearest attack bit widths"})
    near_zero_nats: float = field(default=0.1, metadata={
        "help": "|base - unlearned| below this makes a recovered fraction undefined (null + flag)"})
    kl_sets: tuple[str, ...] = field(default=EVAL_QA_SETS, metadata={
        "help": "sets for KL(base || adapted) on the base greedy reply"})
    lens_sets: tuple[str, ...] = field(default=("forget_eval", "probes", "neighbors"), metadata={
        "help": "sets for the logit lens"})
    relearn_steps: int = field(default=20, metadata={"help": "LoRA steps of the relearning attack on `relearn`"})
    relearn_lr: float = field(default=2e-3, metadata={"help": "learning rate of the relearning attack"})
    relearn_batch: int = field(default=4, metadata={"help": "relearn passages per attack step"})
    metrics: tuple[str, ...] = field(default=(), metadata={"help": "metrics to compute; empty = every registered one"})

    def __post_init__(self):
        for name in ("max_items", "adversarial_per_family", "corpus_tokens", "few_shot"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("generation_tokens", "free_generation_tokens", "batch_size", "generation_batch_size",
                     "corpus_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        bits = tuple(int(b) for b in self.quant_bits)
        if any(not 2 <= b <= 16 for b in bits):
            raise ValueError("quant_bits must be between 2 and 16")
        object.__setattr__(self, "quant_bits", bits)
        for name in ("kl_sets", "lens_sets"):
            sets = tuple(getattr(self, name))
            unknown = sorted(set(sets) - set(EVAL_QA_SETS))
            if unknown:
                raise ValueError(f"{name}: {unknown} are not evaluation sets ({', '.join(EVAL_QA_SETS)})")
            object.__setattr__(self, name, sets)
        object.__setattr__(self, "metrics", tuple(self.metrics))


# demo: a few minutes on the 0.5B model on 2 CPU cores (see README for the measured cost per metric).
# generation_tokens equals the baseline's preset (12 demo, 32 full), so the base model's greedy replies
# after the lead come from baseline/answers.jsonl.
PRESETS = {
    "demo": {"max_items": 8, "adversarial_per_family": 1, "generation_tokens": 12, "free_generation_tokens": 16,
             "corpus_tokens": 512, "kl_sets": ("neighbors", "retain_eval"), "lens_sets": ("forget_eval", "neighbors"),
             "relearn_steps": 10},
    "full": {},
}
