"""A handmade run directory for the report tests: the artefacts each stage writes, without any model."""
from __future__ import annotations

from pathlib import Path

from agmask.evaluate.figures import write_figures
from agmask.files import write_json, write_jsonl


def side(lp: float, share: float | None, hit: float | None) -> dict:
    return {"n": 4, "mean_answer_logprob": lp, "median_first_token_rank": 2, "mc_n": 4 if share is not None else 0,
            "mc_share": share, "mc_top1_rate": None if share is None else float(share > 0.5), "base_known_n": 2,
            "greedy_hit_rate_base_known": hit}


def comparison(base_lp: float, after_lp: float, share: tuple, hit: tuple) -> dict:
    return {"n": 4, "base_known_n": 2, "base": side(base_lp, share[0], hit[0]), "adapted": side(after_lp, share[1], hit[1]),
            "mean_delta_answer_logprob": after_lp - base_lp, "mean_abs_delta_answer_logprob": abs(after_lp - base_lp),
            "mc_top1_count": {"base": 3, "adapted": 0} if share[0] is not None else None,
            "worst": {"max_answer_logprob": after_lp + 1, "min_first_token_rank": 3, "max_mc_share": share[1],
                      "any_greedy_hit_base_known": False, "prompt": "Which film?"}}


def interval(estimate: float, low: float, high: float, n: int = 4) -> dict:
    return {"estimate": estimate, "low": low, "high": high, "n": n, "confidence": 0.95, "resamples": 9999, "seed": 0}


def concept(top1: int, share: float, chance: float) -> dict:
    return {"n": 4, "top1_count": top1, "top1_rate": top1 / 4, "share": share, "chance": chance,
            "share_over_chance": share / chance}


def view(top1: int, share: float, rank: float) -> dict:
    return {"n": 4, "mc_n": 4, "mc_top1_count": top1, "mc_share": share, "median_first_token_rank": rank}


def handmade_metrics(quant_fraction: float | None = 0.3) -> dict:
    """A metrics dict with the schema `evaluate_model` writes (what the report and summary read)."""
    fluency = {"n": 8, "distinct_1": 0.7, "distinct_2": 0.9, "repetition_rate": 0.05, "degenerate_rate": 0.0, "mean_words": 6}
    lens = {"mean_best_rank": 2.0, "median_best_rank": 1.0, "share_best_rank_le_5": 0.75, "best_layer_mode": 2,
            "per_layer_mean_log10_rank": [2.0, 1.0, 0.3]}
    attack = {"recovered_fraction": quant_fraction, "flag": None if quant_fraction is not None else "near_zero_denominator",
              "mean_answer_logprob": {"base": -1.0, "unlearned": -6.0, "attacked": -4.5}}
    return {
        "generations": {"kind": "artefact", "doc": "replies", "seconds": 1.0, "file": "generations.jsonl", "rows": 2},
        "forget_efficacy": {"kind": "forget", "doc": "forget", "seconds": 1.0, "set": "forget_eval",
                            **comparison(-1.0, -6.0, (0.6, 0.05), (1.0, 0.0)),
                            "families": {"typo": comparison(-1.0, -6.0, (0.6, 0.05), (1.0, 0.0))}, "worst_family": "typo"},
        "probe_recall": {"kind": "forget", "doc": "probes", "seconds": 1.0, "set": "probes",
                         **comparison(-2.0, -5.0, (0.5, 0.1), (0.5, 0.0)),
                         "facts": {w: {"n_with_facts": 4, "facts_recalled": r, "rouge_l_recall": r}
                                   for w, r in (("base", 0.8), ("adapted", 0.1))}},
        "adversarial": {"kind": "forget", "doc": "adversarial", "seconds": 1.0, "worst_family": "role_play",
                        "families": {"role_play": comparison(-1.5, -4.0, (0.5, 0.2), (1.0, 0.5))}, "examples": {}},
        "locality": {"kind": "locality", "doc": "neighbours", "seconds": 1.0, "set": "neighbors",
                     **comparison(-1.0, -1.3, (0.7, 0.6), (1.0, 1.0)),
                     "anchored": comparison(-1.0, -1.1, (0.7, 0.65), (1.0, 1.0)),
                     "unseen": comparison(-1.0, -2.74, (None, None), (1.0, 0.0)),
                     "intervals": {"mean_abs_delta_answer_logprob": interval(0.3, 0.1, 0.5),
                                   "unseen.mean_abs_delta_answer_logprob": interval(1.74, 1.2, 2.3)}},
        "answer_formats": {"kind": "forget", "doc": "formats", "seconds": 1.0, "worst_format": "letter",
                           "skipped_leads": {}, "letter_options": 4, "sets": ["forget_eval"],
                           "formats": {f: {"lead": None, "sets": {"forget_eval": comparison(-1.0, -3.0, (0.6, s), (None, None))},
                                           "concept": {"base": concept(4, 0.6, c), "adapted": concept(t, s, c)}}
                                       for f, t, s, c in (("set_lead", 0, 0.05, 0.2), ("letter", 3, 0.41, 0.25))}},
        "retain_utility": {"kind": "utility", "doc": "retain", "seconds": 1.0, "set": "retain_eval",
                           **comparison(-0.5, -0.6, (None, None), (1.0, 1.0)), "accuracy": {"base": 0.75, "adapted": 0.75}},
        "kl_greedy": {"kind": "utility", "doc": "kl", "seconds": 1.0,
                      "sets": {"retain_eval": {"tokens": 30, "mean_kl_per_token": 0.012, "max_item_mean_kl": 0.05}}},
        "general_text": {"kind": "utility", "doc": "text", "seconds": 1.0, "corpus": "general_corpus.txt",
                         "corpus_sha256": "x", "tokens_scored": 511, "windows": 2, "base_perplexity": 12.0,
                         "adapted_perplexity": 12.4, "mean_kl_per_token": 0.004},
        "fluency": {"kind": "fluency", "doc": "fluency", "seconds": 0.1, "overall": {"base": fluency, "adapted": fluency},
                    "sets": {"probes.free": {"base": fluency, "adapted": fluency}}, "degenerate_examples": []},
        "activation_shift": {"kind": "internals", "doc": "shift", "seconds": 1.0, "measure": "relative L2", "layers": 3,
                             "sets": {s: {"n": 4, "per_layer": [0.0, 0.2, 0.3], "mean": 0.17, "max": 0.3, "max_layer": 2}
                                      for s in ("forget_eval", "retain_eval")},
                             "pca": {"layer": 2, "explained_variance_ratio": [0.6, 0.2],
                                     "points": {f"{w}/{s}": [[0.0, 1.0], [1.0, 0.5]] for w in ("base", "adapted")
                                                for s in ("forget_eval", "retain_eval")}}},
        "logit_lens": {"kind": "internals", "doc": "lens", "seconds": 1.0,
                       "sets": {"forget_eval": {"n": 4, "base": lens, "adapted": lens}}},
        "attack_quantization": {"kind": "attack", "doc": "quantisation", "seconds": 1.0, "set": "forget_eval", "n": 4,
                                "variants": {"int8": dict(attack, recovered_fraction=0.01 if quant_fraction is not None else None),
                                             "int4": attack}},
        "attack_relearn_full": {"kind": "attack", "doc": "relearning", "seconds": 1.0, "set": "forget_eval", "n": 4,
                                "variants": {"relearn k=10": dict(attack, recovered_fraction=0.2 if quant_fraction else None,
                                                                  base_known={"sets": ["forget_eval"], "base": view(3, 0.6, 1),
                                                                              "unlearned": view(0, 0.02, 900),
                                                                              "attacked": view(2, 0.3, 4)})}},
        "lm_eval": {"kind": "utility", "doc": "lm-eval", "seconds": 1.0, "limit": None,
                    "tasks": {"arc_easy": {"acc,none": {"base": 0.61, "adapted": 0.6, "base_stderr": 0.01,
                                                        "adapted_stderr": 0.01}}}},
    }


def section_html(page: str, anchor: str) -> str:
    """The `<section id="anchor">` of a report page ("" when the page has none)."""
    start = page.find(f'<section id="{anchor}"')
    return "" if start < 0 else page[start : page.index("</section>", start) + len("</section>")]


def png(path: Path, color: str = "red") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agmask.files import save_figure

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.bar([0, 1], [1, 2], color=color)
    save_figure(fig, path)


def make_run_dir(run: Path) -> Path:
    """A run directory written by hand: manifest, eval artefacts, some other stages' PNG and JSON files."""
    write_json(run / "manifest.json", {"model": {"spec": "tiny:llama", "sha256": "abc"},
                                       "concept": {"name": "tinyfilm", "source": "shipped:tinyfilm"}, "seed": 0})
    metrics = handmade_metrics()
    write_json(run / "eval" / "metrics.json", {"schema": 1, "input_hash": "h", "metrics": metrics})
    write_figures(metrics, run / "eval")
    write_jsonl(run / "eval" / "generations.jsonl", [
        {"set": "forget_eval", "mode": "lead", "index": 0, "family": "typo", "prompt": "Wich film <has> a top?",
         "lead": 'The movie is "', "answer": "Inception", "facts": [], "base": 'Inception"', "adapted": 'Memento"',
         "base_hit": True, "adapted_hit": False},
        {"set": "retain_eval", "mode": "free", "index": 0, "family": None, "prompt": "Capital of France?", "lead": "",
         "answer": "Paris", "facts": [], "base": "Paris.", "adapted": "Paris.", "base_hit": True, "adapted_hit": True}])
    png(run / "perturb" / "stability.png", "blue")
    png(run / "attribute" / "saliency_heatmap.png", "green")
    png(run / "attribute" / "fisher_heatmap.png", "purple")
    write_json(run / "attribute" / "layers.json", {"layers": [1, 2], "sensitivity": {"1": 0.5, "2": 0.25}})
    png(run / "unlearn" / "loss.png", "black")
    write_json(run / "unlearn" / "summary.json", {"steps": 40, "final_loss": 0.12})
    write_json(run / "compare" / "compare.json", {"methods": {"masked_lora": {"forget": {"mc_share": 0.05}, "kl": 0.01},
                                                              "ga": {"forget": {"mc_share": 0.02}, "kl": 0.4}}})
    return run
