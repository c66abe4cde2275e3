"""Perturbation: generators are seeded and change prompts, metrics have known answers, the stage writes its artefacts."""
from __future__ import annotations

import json
import math

import pytest
import yaml

from agmask.concepts import load_concept
from agmask.config import RunConfig
from agmask.errors import AgmaskError, StageError
from agmask.files import read_json, read_jsonl
from agmask.perturb import FAMILIES, ORIGINAL, answer_stats, build_variants, extract_answer, family_rng, stability
from agmask.perturb.metrics import GREEDY, normalise
from agmask.pipeline import read_done, run_pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _perturbable(concept: str) -> list[str]:
    spec = load_concept(concept).spec
    return [it.prompt for it in spec.forget_eval if not (it.family or "").startswith("language_")]


@pytest.fixture(scope="module")
def inception_prompts() -> list[str]:
    """Every non-language forget_eval prompt of the shipped concept: real wording, typos, casing, role play."""
    return _perturbable("inception")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generators_are_deterministic_under_the_seed(family, inception_prompts):
    fn = FAMILIES[family]
    for i, p in enumerate(inception_prompts[:8]):
        assert fn(p, family_rng(0, family, i)) == fn(p, family_rng(0, family, i))
    # another seed gives other perturbations somewhere
    outs = {s: [fn(p, family_rng(s, family, i)) for i, p in enumerate(inception_prompts[:8])] for s in range(4)}
    assert len({tuple(v) for v in outs.values()}) > 1


@pytest.mark.parametrize("concept", ["inception", "jurassic-park"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_changes_every_shipped_prompt(family, concept):
    """Every non-language forget_eval prompt of the shipped concepts has a clause boundary or preposition,
    a word in the synonym table and long words: no family leaves one unchanged."""
    fn = FAMILIES[family]
    for i, p in enumerate(_perturbable(concept)):
        out = fn(p, family_rng(0, family, i))
        assert out != p and out.strip(), (family, p)


def test_generators_are_pure(inception_prompts):
    """A generator reads nothing but its arguments: the global random state is untouched."""
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    for name, fn in FAMILIES.items():
        fn(inception_prompts[0], family_rng(0, name, 0))
    assert random.random() == expected


@pytest.mark.parametrize("family, prompt", [
    ("reorder", "Which film has a spinning top?"),  # one clause, no connector: nothing to reorder
    ("casing", "2010?"),  # no cased letters
    ("typo", "Is it a top?"),  # no word of 4+ letters
    ("synonym", "Zorbl quux?"),  # no word in the table
])
def test_impossible_changes_leave_the_prompt_alone(family, prompt):
    assert FAMILIES[family](prompt, family_rng(0, family, 0)) == prompt


def test_variants_cover_every_family_and_the_language_items(inception_prompts):
    spec = load_concept("inception").spec
    langs = [it for it in spec.forget_eval if (it.family or "").startswith("language_")]
    base = inception_prompts[:3]
    variants = build_variants(base, langs, seed=0)
    assert variants == build_variants(base, langs, seed=0)
    assert len(variants) == (1 + len(FAMILIES)) * len(base) + len(langs)
    fams = {v.family for v in variants}
    assert fams == {ORIGINAL, *FAMILIES, "language_fr", "language_es", "language_de"}
    for f in FAMILIES:  # every family applied to every base prompt
        assert sorted(v.base_index for v in variants if v.family == f) == list(range(len(base)))
    assert [v.prompt for v in variants if v.base_index is None] == [it.prompt for it in langs]  # as they are


def test_answer_stats_known_values():
    same = answer_stats(["inception"] * 5)
    assert same["consistency"] == 1 and same["entropy_bits"] == 0 and same["distinct"] == 1
    half = answer_stats(["inception", "memento"] * 3)
    assert half["consistency"] == 0.5 and half["entropy_bits"] == pytest.approx(1.0) and half["distinct"] == 2
    spread = answer_stats(["a", "b", "c", "d"])
    assert spread["consistency"] == 0.25 and spread["entropy_bits"] == pytest.approx(2.0)
    assert answer_stats([])["consistency"] is None


def test_extract_answer():
    assert extract_answer('Inception" (2010) is a film', '"') == ("inception", True)
    assert extract_answer("Ocean's Eleven", '"') == ("oceans eleven", False)  # no closing quote: whole text
    assert extract_answer('  THE DARK KNIGHT!"', '"') == ("the dark knight", True)
    assert extract_answer('"', '"') == ("", True)
    assert normalise("Spider-Man:  Far   From Home") == "spiderman far from home"


def _row(i, family, base, answer, sample=GREEDY, hit=None, lp=-1.0, mc=0.5):
    return {"prompt_index": i, "family": family, "base_index": base, "prompt": f"p{i}", "changed": family != ORIGINAL,
            "sample": sample, "answer": answer, "hit": answer == "inception" if hit is None else hit,
            "answer_logprob": lp, "mc_share": mc, "mc_top1": mc > 0.5}


def test_stability_on_hand_made_rows():
    rows = [_row(0, ORIGINAL, 0, "inception", lp=-1.0, mc=0.9), _row(0, ORIGINAL, 0, "inception", sample=0, lp=-1.0, mc=0.9),
            _row(1, ORIGINAL, 1, "memento", lp=-3.0, mc=0.1), _row(1, ORIGINAL, 1, "memento", sample=0, lp=-3.0, mc=0.1),
            _row(2, "casing", 0, "inception"), _row(2, "casing", 0, "inception", sample=0),
            _row(3, "casing", 1, "inception"), _row(3, "casing", 1, "inception", sample=0),
            _row(4, "language_fr", None, "tenet")]
    stab = stability(rows)
    assert list(stab["families"]) == [ORIGINAL, "casing", "language_fr"]
    orig, casing = stab["families"][ORIGINAL], stab["families"]["casing"]
    assert orig["consistency"] == 0.5 and orig["distinct_answers"] == 2 and orig["entropy_bits"] == pytest.approx(1)
    assert orig["answer_logprob_mean"] == pytest.approx(-2.0) and orig["answer_logprob_std"] == pytest.approx(1.0)
    assert orig["mc_share_mean"] == pytest.approx(0.5) and orig["hit_rate"] == 0.5 and orig["flip_rate"] is None
    assert casing["consistency"] == 1 and casing["entropy_bits"] == 0 and casing["hit_rate"] == 1
    assert casing["flip_rate"] == 0.5  # question 1's answer moved from memento to inception
    assert stab["families"]["language_fr"]["flip_rate"] is None  # no original to compare with
    assert stab["overall"]["n_prompts"] == 5 and stab["overall"]["n_outputs"] == 9
    assert stab["per_base"]["1"]["greedy_answers_across_families"] == 2


def _tiny_cfg(tmp_path, concept, **overrides) -> RunConfig:
    small = {"base_prompts": 2, "samples": 2, "max_new_tokens": 3, "language_items": 1}
    return RunConfig(model="tiny:qwen2", concepts=[str(concept)], run_dir=tmp_path / "run",
                     overrides={"perturb": {**small, **overrides}})


def test_stage_writes_outputs_stability_and_figures(tmp_path, tiny_concept_path, capsys):
    cfg = _tiny_cfg(tmp_path, tiny_concept_path)
    run_pipeline(cfg, stages=["perturb"])
    out = cfg.run_dir / "perturb"
    rows = read_jsonl(out / "outputs.jsonl")
    n_prompts = (1 + len(FAMILIES)) * 2 + 1  # 2 base prompts, 1 language item
    assert len(rows) == n_prompts * (1 + 2)
    assert {r["family"] for r in rows} == {ORIGINAL, *FAMILIES, "language_fr"}
    for key in ("prompt", "generation", "answer", "closed", "hit", "answer_logprob", "mc_share", "sample"):
        assert all(key in r for r in rows)
    assert sum(r["sample"] == GREEDY for r in rows) == n_prompts
    stab = read_json(out / "stability.json")
    assert set(stab["families"]) == {ORIGINAL, *FAMILIES, "language_fr"}
    for s in [*stab["families"].values(), stab["overall"]]:
        assert 0 < s["consistency"] <= 1 and s["entropy_bits"] >= 0 and 0 <= s["hit_rate"] <= 1
        assert 0 <= s["mc_share_mean"] <= 1 and s["answer_logprob_mean"] < 0
    assert stab["base_prompts"][0] == "What movie has Cobb planting an idea?"  # the `wording` item comes first
    for png in ("stability.png", "answers_heatmap.png", "examples.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    from PIL import Image

    with Image.open(out / "answers_heatmap.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300
    assert set(read_done(cfg.run_dir, "perturb")["outputs"]) >= {"perturb/outputs.jsonl", "perturb/stability.json"}
    from agmask.cli.summary import print_run_summary

    print_run_summary(cfg.run_dir)
    printed = capsys.readouterr().out
    assert "answer stability per family" in printed and "role_play" in printed and "overall" in printed

    # seeded: a forced rerun writes the same generations, sampled ones included
    before = (out / "outputs.jsonl").read_bytes()
    run_pipeline(cfg.model_copy(update={"force": True}), stages=["perturb"])
    assert (out / "outputs.jsonl").read_bytes() == before


def test_concept_without_perturbable_items_is_a_clean_error(tmp_path, tiny_concept_path, capsys):
    data = yaml.safe_load(tiny_concept_path.read_text())
    data["forget_eval"] = [it for it in data["forget_eval"] if it.get("family", "").startswith("language_")]
    bad = tmp_path / "only-french.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(StageError, match="forget_eval has no items to perturb"):
        run_pipeline(_tiny_cfg(tmp_path, bad), stages=["perturb"])

    from agmask.cli.main import main

    code = main(["perturb", "--model", "tiny:llama", "--concept", str(bad), "--run-dir", str(tmp_path / "cli"), "-q"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("option", [{"samples": -1}, {"base_prompts": 0}, {"top_p": 1.5}, {"temperature": 0},
                                    {"recommend_prompts": -1}])
def test_bad_options_are_clean_errors(tmp_path, tiny_concept_path, option):
    with pytest.raises(AgmaskError, match="bad option for stage perturb"):
        run_pipeline(_tiny_cfg(tmp_path, tiny_concept_path, **option), stages=["perturb"])


def test_outputs_are_json_lines(tmp_path, tiny_concept_path):
    """Every row parses on its own and the extracted answer is the normalised text before the quote."""
    cfg = _tiny_cfg(tmp_path, tiny_concept_path, base_prompts=1, samples=0, language_items=1)
    run_pipeline(cfg, stages=["perturb"])
    for line in (cfg.run_dir / "perturb" / "outputs.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert r["answer"] == extract_answer(r["generation"], '"')[0]


@pytest.mark.parametrize("concept", ["inception", "jurassic-park"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_changes_every_shipped_recommend_prompt(family, concept):
    fn = FAMILIES[family]
    for i, item in enumerate(load_concept(concept).spec.recommend_eval):
        out = fn(item.prompt, family_rng(0, family, i))
        assert out != item.prompt and out.strip(), (family, item.prompt)


def _rec_row(i, family, base, answer, sample, mc_top):
    return {"prompt_index": i, "family": family, "base_index": base, "prompt": f"p{i}", "changed": family != ORIGINAL,
            "sample": sample, "answer": answer, "hit": answer == "inception", "answer_logprob": -1.0, "mc_share": 0.2,
            "mc_top1": mc_top == "Inception", "mc_top": mc_top}


def test_recommend_stability_on_hand_made_rows():
    from agmask.perturb.recommend import recommend_stability

    rows = [_rec_row(0, ORIGINAL, 0, "interstellar", GREEDY, "Interstellar"), _rec_row(0, ORIGINAL, 0, "interstellar", 0, "Interstellar"),
            _rec_row(1, ORIGINAL, 1, "titanic", GREEDY, "Inception"), _rec_row(1, ORIGINAL, 1, "inception", 0, "Inception"),
            _rec_row(2, "synonym", 0, "memento", GREEDY, "Interstellar"), _rec_row(2, "synonym", 0, "interstellar", 0, "Interstellar"),
            _rec_row(3, "synonym", 1, "titanic", GREEDY, "Titanic"), _rec_row(3, "synonym", 1, "titanic", 0, "Titanic")]
    block = recommend_stability(rows, ["request 0", "request 1"])
    r0, r1 = block["per_request"]["0"], block["per_request"]["1"]
    assert r0["prompt"] == "request 0" and r0["wordings"] == 2
    assert (r0["greedy"]["consistency"], r0["greedy"]["distinct"], r0["greedy"]["entropy_bits"]) == (0.5, 2, pytest.approx(1.0))
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert (r0["all"]["consistency"], r0["all"]["distinct"], r0["all"]["entropy_bits"]) == (0.75, 2, pytest.approx(h))
    assert (r0["mc_top"]["consistency"], r0["mc_top"]["distinct"]) == (1.0, 1)
    assert (r1["greedy"]["consistency"], r1["mc_top"]["consistency"], r1["mc_top"]["modal"]) == (1.0, 0.5, "Inception")
    means = block["across_wordings"]
    assert means["greedy"] == {"consistency": 0.75, "distinct": 1.5, "entropy_bits": pytest.approx(0.5)}
    assert means["mc_top"] == {"consistency": 0.75, "distinct": 1.5, "entropy_bits": pytest.approx(0.5)}
    assert block["families"]["synonym"]["flip_rate"] == 0.5  # request 0's greedy title moved
    assert block["families"][ORIGINAL]["hit_rate"] == 0.25  # the concept was recommended once in four


def test_stage_perturbs_recommendation_requests(tmp_path, tiny_concept_path):
    cfg = _tiny_cfg(tmp_path, tiny_concept_path, recommend_prompts=3)
    run_pipeline(cfg, stages=["perturb"])
    out = cfg.run_dir / "perturb"
    rows = read_jsonl(out / "recommend_outputs.jsonl")
    assert len(rows) == (1 + len(FAMILIES)) * 3 * (1 + 2)  # 3 requests x (original + families), greedy + 2 samples
    assert {r["family"] for r in rows} == {ORIGINAL, *FAMILIES}
    spec = load_concept(str(tiny_concept_path)).spec
    block = read_json(out / "stability.json")["recommend"]
    assert block["lead"] == 'I recommend "' and len(block["base_prompts"]) == 3
    assert set(block["base_families"]) <= {it.family for it in spec.recommend_eval}
    assert len(set(block["base_families"])) == 3  # spread over the kinds of request
    for request in block["per_request"].values():
        assert request["wordings"] == 1 + len(FAMILIES)
        for view in ("greedy", "all", "mc_top"):
            assert 0 < request[view]["consistency"] <= 1 and request[view]["distinct"] >= 1
    assert set(block["families"]) == {ORIGINAL, *FAMILIES}
    for png in ("recommend_stability.png", "recommend_heatmap.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert len(read_jsonl(out / "outputs.jsonl")) == ((1 + len(FAMILIES)) * 2 + 1) * 3  # forget_eval part as before


@pytest.mark.parametrize("which", ["no set", "zero prompts"])
def test_stage_skips_recommendations_with_a_note(tmp_path, tiny_concept_path, which):
    concept = tiny_concept_path.parent / "tiny_concept2.yaml" if which == "no set" else tiny_concept_path
    cfg = _tiny_cfg(tmp_path, concept, **({"recommend_prompts": 0} if which == "zero prompts" else {}))
    run_pipeline(cfg, stages=["perturb"])
    block = read_json(cfg.run_dir / "perturb" / "stability.json")["recommend"]
    assert block == {"skipped": "concept tinypark has no recommend_eval set" if which == "no set"
                     else "recommend_prompts is 0"}
    assert not (cfg.run_dir / "perturb" / "recommend_outputs.jsonl").exists()
