"""Options of the evaluation (the `evaluate` stage's Config) and its budget presets."""
from __future__ import annotations

from dataclasses import field
from pathlib import Path

from agmask.config import stage_options

EVAL_QA_SETS = ("forget_eval", "probes", "neighbors", "retain_eval")  # the evaluation sets; never the train sets
QUANT_SCHEMES = ("int8", "int4", "int4_g128", "nf4")  # every-linear-weight quantisation (attack_quantization_full)


@stage_options
class EvalConfig:
    max_items: int = field(default=0, metadata={"help": "items per evaluation set (spread over families); 0 = all"})
    adversarial_per_family: int = field(default=0, metadata={"help": "adversarial prompts per family; 0 = all"})
    generation_tokens: int = field(default=32, metadata={
        "help": "greedy reply length after the lead; equal to the baseline's, the base replies are reused"})
    free_generation_tokens: int = field(default=48, metadata={
        "help": "free reply length (no lead) on probes and retain_eval: facts recalled, fluency"})
    batch_size: int = field(default=8, metadata={"help": "KL batch (the residual metrics run prompt by prompt)"})
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
    recommend_samples: int = field(default=20, metadata={
        "help": "sampled replies (temperature 1) per recommend_eval prompt for the recommendation rate; 0 = skip it"})
    recommend_tokens: int = field(default=16, metadata={"help": "tokens per sampled recommendation, after the lead"})
    format_sets: tuple[str, ...] = field(default=EVAL_QA_SETS, metadata={
        "help": "sets scored again under answer formats training never used (answer_formats)"})
    unseen_leads: tuple[str, ...] = field(default=("Answer: ",), metadata={
        "help": "answer leads for answer_formats; a lead any training item uses is left out (and reported)"})
    letter_options: int = field(default=4, metadata={"help": "options of the lettered multiple-choice format (2-8)"})
    attack_sets: tuple[str, ...] = field(default=("forget_eval", "probes"), metadata={
        "help": "sets whose base-known prompts give each attack's MC top-1 count, MC share and median rank"})
    full_relearn_steps: tuple[int, ...] = field(default=(10, 20, 50), metadata={
        "help": "checkpoints (cumulative steps of one run) of the unconstrained relearning attack; empty = skip"})
    full_relearn_r: int = field(default=8, metadata={"help": "rank of the attacker's fresh LoRA (every linear layer)"})
    full_relearn_lr: float = field(default=1e-3, metadata={"help": "learning rate of the unconstrained relearning attack"})
    full_quant_schemes: tuple[str, ...] = field(default=QUANT_SCHEMES, metadata={
        "help": "quantisations of every linear weight of the merged model: int8, int4 (per channel), int4_g128 "
                "(groups of quant_group_size), nf4 (bitsandbytes, where it runs); empty = skip"})
    quant_group_size: int = field(default=128, metadata={"help": "input columns per scale of the int4_g128 scheme"})
    lm_eval_tasks: tuple[str, ...] = field(default=(), metadata={
        "help": "lm-evaluation-harness tasks run on the base and the adapted model (e.g. mmlu, arc_easy); empty = skip"})
    lm_eval_include_path: str = field(default="", metadata={"help": "a directory of local lm-eval task YAML files"})
    lm_eval_limit: int = field(default=0, metadata={"help": "documents per lm-eval task; 0 = all"})
    lm_eval_batch_size: int = field(default=8, metadata={"help": "lm-eval batch size"})
    bootstrap_resamples: int = field(default=9999, metadata={"help": "resamples of the bootstrap intervals"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap intervals"})
    metrics: tuple[str, ...] = field(default=(), metadata={"help": "metrics to compute; empty = every registered one"})

    def __post_init__(self):
        for name in ("max_items", "adversarial_per_family", "corpus_tokens", "few_shot", "recommend_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("generation_tokens", "free_generation_tokens", "batch_size", "generation_batch_size",
                     "corpus_window", "recommend_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        bits = tuple(int(b) for b in self.quant_bits)
        if any(not 2 <= b <= 16 for b in bits):
            raise ValueError("quant_bits must be between 2 and 16")
        object.__setattr__(self, "quant_bits", bits)
        for name in ("letter_options",):
            if not 2 <= getattr(self, name) <= 8:
                raise ValueError(f"{name} must be between 2 and 8")
        for name in ("full_relearn_r", "quant_group_size", "lm_eval_batch_size", "bootstrap_resamples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lm_eval_limit < 0:
            raise ValueError("lm_eval_limit must be >= 0")
        if self.lm_eval_include_path and not Path(self.lm_eval_include_path).expanduser().is_dir():
            raise ValueError(f"lm_eval_include_path: {self.lm_eval_include_path} is not a directory (give the folder "
                             f"that holds your lm-eval task YAML files)")
        steps = tuple(int(k) for k in self.full_relearn_steps)
        if any(k < 1 for k in steps) or list(steps) != sorted(set(steps)):
            raise ValueError("full_relearn_steps must be increasing positive step counts, e.g. [10, 20, 50]")
        object.__setattr__(self, "full_relearn_steps", steps)
        unknown = sorted(set(self.full_quant_schemes) - set(QUANT_SCHEMES))
        if unknown:
            raise ValueError(f"full_quant_schemes: unknown {unknown} (known: {', '.join(QUANT_SCHEMES)})")
        if any(not lead.strip() for lead in self.unseen_leads):
            raise ValueError("unseen_leads must not be blank")
        for name in ("full_quant_schemes", "unseen_leads", "lm_eval_tasks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("kl_sets", "lens_sets", "format_sets", "attack_sets"):
            sets = tuple(getattr(self, name))
            unknown = sorted(set(sets) - set(EVAL_QA_SETS))
            if unknown:
                raise ValueError(f"{name}: {unknown} are not evaluation sets ({', '.join(EVAL_QA_SETS)})")
            object.__setattr__(self, name, sets)
        from agmask.evaluate.registry import check_known  # filled once the package (its metric modules) has loaded

        try:
            check_known(self.metrics)
        except ValueError as e:
            raise ValueError(f"metrics: {e}") from None
        object.__setattr__(self, "metrics", tuple(self.metrics))


# demo: a few minutes on the 0.5B model on 2 CPU cores (see README for the measured cost per metric).
# generation_tokens equals the baseline's preset (12 demo, 32 full), so the base model's greedy replies
# after the lead come from baseline/answers.jsonl. The scrutiny metrics run lean in the demo: formats on
# forget_eval and neighbors, one unconstrained relearning checkpoint, one every-weight quantisation.
PRESETS = {
    "demo": {"max_items": 8, "adversarial_per_family": 1, "generation_tokens": 12, "free_generation_tokens": 16,
             "corpus_tokens": 512, "kl_sets": ("neighbors", "retain_eval"), "lens_sets": ("forget_eval", "neighbors"),
             "relearn_steps": 10, "recommend_samples": 8, "recommend_tokens": 10,
             "format_sets": ("forget_eval", "neighbors"), "attack_sets": ("forget_eval",),
             "full_relearn_steps": (10,), "full_quant_schemes": ("int4_g128",)},
    "full": {},
}
