"""Stage 1, perturb: does the answer survive rewording? Prompt perturbation stability (seed figures 1-2).

Base prompts are the concept's `forget_eval` items tagged `wording` (then other non-language items,
up to `base_prompts`). Every family in `agmask.perturb.FAMILIES` is applied to every base prompt;
the spec's `language_*` items are added as they are. Each prompt is scored (answer log-prob and
multiple-choice share after the `forget_eval` lead) and generated greedily and with sampling.

Writes `perturb/outputs.jsonl` (one row per prompt and generation), `perturb/stability.json`
(per family and overall) and `perturb/stability.png`, `perturb/answers_heatmap.png`, `perturb/examples.png`.

Recommendation requests (`recommend_eval`, up to `recommend_prompts`) get the same families and the same
generation settings after their own lead (`perturb.recommend`): `perturb/recommend_outputs.jsonl`, the
`recommend` block of `stability.json`, `perturb/recommend_stability.png` and `perturb/recommend_heatmap.png`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.config import stage_options
from agmask.errors import StageError
from agmask.files import write_json, write_jsonl
from agmask.perturb.families import FAMILIES, LANGUAGE_PREFIX, Variant, build_variants
from agmask.perturb.figures import examples_figure, heatmap_figure, recommend_figure, stability_figure
from agmask.perturb.metrics import GREEDY, extract_answer, stability, top_answers
from agmask.perturb.recommend import SET as RECOMMEND_SET
from agmask.perturb.recommend import recommend_base_items, recommend_stability, recommend_variants
from agmask.scoring import PrefixKV, answer_hit, generate, prefix_for, score_items
from agmask.scoring.encode import closing_for

NAME = "perturb"
DIR = "perturb"
DEPENDS: tuple[str, ...] = ()
SCORES_ANSWERS = True  # its outputs hold answer scores (agmask.scoring.SCORING_VERSION is in its input hash)
SET = "forget_eval"  # prompts, lead and answers come from this set
BASE_FAMILY = "wording"


@stage_options
class Config:
    base_prompts: int = field(default=8, metadata={"help": "forget_eval items to perturb: `wording` ones first"})
    language_items: int = field(default=0, metadata={"help": "language_* items per language; 0 = all"})
    samples: int = field(default=4, metadata={"help": "sampled generations per prompt, besides the greedy one"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature of the sampled generations"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling: the smallest token set of this mass"})
    max_new_tokens: int = field(default=12, metadata={"help": "tokens generated after the lead"})
    batch_size: int = field(default=32, metadata={"help": "sequences per generation batch (greedy: prompts; sampled: "
                                                    "prompts x samples); decoding reads every weight once per batch"})
    heatmap_answers: int = field(default=10, metadata={"help": "answer columns in the heatmap (+ other)"})
    recommend_prompts: int = field(default=8, metadata={
        "help": "recommend_eval requests to perturb (spread over their family tags); 0 = none"})

    def __post_init__(self) -> None:
        if self.base_prompts < 1:
            raise ValueError("base_prompts must be >= 1")
        if self.language_items < 0 or self.samples < 0 or self.recommend_prompts < 0:
            raise ValueError("language_items, samples and recommend_prompts must be >= 0")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be > 0 and top_p in (0, 1]")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.heatmap_answers < 1:
            raise ValueError("max_new_tokens, batch_size and heatmap_answers must be >= 1")


# demo on the 0.5B model, 2 cores: 3 x 8 + 3 = 27 prompts (4 x 8 + 3 took 135 s in all), + 2 x 8 requests.
PRESETS = {"demo": {"base_prompts": 3, "language_items": 1, "samples": 2, "max_new_tokens": 8, "recommend_prompts": 2},
           "full": {"base_prompts": 12, "samples": 8, "max_new_tokens": 16, "recommend_prompts": 8}}


def base_items(spec: ConceptSpec, n: int) -> list[PromptItem]:
    """`wording` items of forget_eval first, then its other non-language items, n at most."""
    items = [it for it in spec.items(SET) if not (it.family or "").startswith(LANGUAGE_PREFIX)]
    ordered = [it for it in items if it.family == BASE_FAMILY] + [it for it in items if it.family != BASE_FAMILY]
    if not ordered:
        raise StageError(f"concept {spec.name}: {SET} has no items to perturb (only language_* items); "
                         f"add some with `family: {BASE_FAMILY}`")
    return ordered[:n]


def language_items(spec: ConceptSpec, per_language: int) -> list[PromptItem]:
    """The spec's language_* items of forget_eval, as they are; `per_language` of each (0 = all)."""
    out, seen = [], {}
    for it in spec.items(SET):
        fam = it.family or ""
        if fam.startswith(LANGUAGE_PREFIX):
            seen[fam] = seen.get(fam, 0) + 1
            if not per_language or seen[fam] <= per_language:
                out.append(it)
    return out


def output_rows(variants: list[Variant], sources: list[PromptItem], scores: list[dict], gens: list[list[str]],
                spec: ConceptSpec, closing: str) -> list[dict]:
    """One row per (prompt, generation); generation 0 of each prompt is the greedy one (`sample` = -1)."""
    rows = []
    for i, (v, src, sc, outs) in enumerate(zip(variants, sources, scores, gens)):
        for k, text in enumerate(outs):
            answer, closed = extract_answer(text, closing)
            rows.append({
                "prompt_index": i, "family": v.family, "base_index": v.base_index, "prompt": v.prompt,
                "changed": v.changed, "sample": GREEDY if k == 0 else k - 1, "generation": text,
                "answer": answer, "closed": closed, "hit": answer_hit(text, spec.answers_for(src)),
                "answer_logprob": sc["answer_logprob"], "first_token_rank": sc["first_token_rank"],
                "mc_share": sc["mc_share"], "mc_top1": sc["mc_top1"], "mc_top": sc["mc_top"],
            })
    return rows


def answer_prompts(model, tokenizer, spec: ConceptSpec, set_name: str, items: list[PromptItem], conf: Config,
                   seed: int, reporter) -> tuple[list[dict], list[list[str]]]:
    """Score every prompt after the set's lead, then its greedy reply and `conf.samples` sampled ones (all
    starting from the scored prefix keys). Returns (score rows, [greedy, *samples] per prompt)."""
    kv = PrefixKV()  # the scoring pass's prefix keys: both generations start from them (one prefix pass)
    scores = [s.to_dict() for s in score_items(model, tokenizer, spec, set_name, items, reporter=reporter, kv=kv)]
    prefixes = [prefix_for(tokenizer, spec, set_name, it) for it in items]
    with reporter.task("generating (greedy)", len(prefixes)) as advance:
        greedy = generate(model, tokenizer, prefixes, max_new_tokens=conf.max_new_tokens,
                          batch_size=conf.batch_size, on_batch=advance, kv=kv)
    sampled: list[list[str]] = [[] for _ in prefixes]
    if conf.samples:
        with reporter.task(f"generating ({conf.samples} samples)", len(prefixes)) as advance:
            sampled = generate(model, tokenizer, prefixes, max_new_tokens=conf.max_new_tokens,
                               batch_size=max(1, conf.batch_size // conf.samples), do_sample=True,
                               temperature=conf.temperature, top_p=conf.top_p, num_return_sequences=conf.samples,
                               seed=seed, on_batch=advance, kv=kv)
    return scores, [g + s for g, s in zip(greedy, sampled)]


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    spec, out_dir = session.spec, Path(run_dir) / DIR
    base = base_items(spec, conf.base_prompts)
    langs = language_items(spec, conf.language_items)
    variants = build_variants([it.prompt for it in base], langs, cfg.seed)
    lang_iter = iter(langs)  # language variants come last, in the order of `langs`
    sources = [base[v.base_index] if v.base_index is not None else next(lang_iter) for v in variants]
    items = [PromptItem(prompt=v.prompt, answer=src.answer, family=v.family) for v, src in zip(variants, sources)]

    model, tokenizer, _ = session.model()
    reporter = session.reporter
    scores, gens = answer_prompts(model, tokenizer, spec, SET, items, conf, cfg.seed, reporter)
    lead = spec.lead_for(SET)
    closing = closing_for(lead)
    rows = output_rows(variants, sources, scores, gens, spec, closing)

    stab = stability(rows)
    chance = 1 / len(spec.candidates)
    title = f"{spec.name}: {session.cfg.model}"
    recommend = run_recommend(model, tokenizer, spec, conf, cfg.seed, reporter, out_dir, title)
    write_jsonl(out_dir / "outputs.jsonl", rows)
    write_json(out_dir / "stability.json", {
        "set": SET, "lead": lead, "closing": closing, "answers": spec.answers, "seed": cfg.seed,
        "config": dataclasses.asdict(conf), "generated_families": list(FAMILIES),
        "language_families": sorted({it.family for it in langs}),
        "base_prompts": [it.prompt for it in base], "mc_chance": chance, "entropy_unit": "bits",
        "top_answers": top_answers(rows, conf.heatmap_answers), **stab, "recommend": recommend,
    })
    stability_figure(stab, chance, out_dir / "stability.png", f"Answer stability under prompt perturbation — {title}")
    heatmap_figure(rows, out_dir / "answers_heatmap.png", f"Extracted answers per perturbed prompt — {title}",
                   k=conf.heatmap_answers)
    examples_figure(rows, out_dir / "examples.png", f"One question, many wordings — {title}")


def run_recommend(model, tokenizer, spec: ConceptSpec, conf: Config, seed: int, reporter, out_dir: Path,
                  title: str) -> dict:
    """The recommendation requests under perturbation: writes their outputs and figures, returns the
    `recommend` block of stability.json (`{"skipped": why}` without requests)."""
    base = recommend_base_items(spec, conf.recommend_prompts)
    if not base:
        why = "recommend_prompts is 0" if spec.recommend_eval else f"concept {spec.name} has no {RECOMMEND_SET} set"
        return {"skipped": why}
    variants, items = recommend_variants(base, seed)
    scores, gens = answer_prompts(model, tokenizer, spec, RECOMMEND_SET, items, conf, seed, reporter)
    lead = spec.lead_for(RECOMMEND_SET)
    rows = output_rows(variants, [base[v.base_index] for v in variants], scores, gens, spec, closing_for(lead))
    block = {"set": RECOMMEND_SET, "lead": lead, "base_prompts": [it.prompt for it in base],
             "base_families": [it.family for it in base], "mc_chance": 1 / len(spec.candidates),
             "top_answers": top_answers(rows, conf.heatmap_answers), **recommend_stability(rows, [it.prompt for it in base])}
    write_jsonl(out_dir / "recommend_outputs.jsonl", rows)
    recommend_figure(block, out_dir / "recommend_stability.png", f"Recommended titles across wordings — {title}")
    heatmap_figure(rows, out_dir / "recommend_heatmap.png", f"Recommended title per perturbed request — {title}",
                   k=conf.heatmap_answers)
    return block
