"""Concept specs: the shipped ones and the examples are valid and big enough; every bad file gets a one-line
error."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agmask.concepts import EVAL_SETS, TRAIN_SETS, load_concept, shipped_concepts
from agmask.errors import ConceptError

MINIMUM = {"forget_train": 40, "forget_eval": 40, "probes": 15, "neighbors": 30, "retain_train": 30,
           "retain_eval": 30, "relearn": 20, "recommend_train": 20, "recommend_eval": 20}
# The shipped concepts and the example files under examples/concepts (given as paths, as a user would).
EXAMPLES = sorted(str(p) for p in (Path(__file__).resolve().parents[2] / "examples" / "concepts").glob("*.yaml"))
CONCEPT_FILES = shipped_concepts() + EXAMPLES


def test_the_examples_are_found():
    assert any(p.endswith("albert-einstein.yaml") for p in EXAMPLES)


@pytest.mark.parametrize("name", CONCEPT_FILES)
def test_concept_files_meet_the_minimum_sizes(name):
    spec = load_concept(name).spec
    for set_name, n in MINIMUM.items():
        assert len(spec.items(set_name)) >= n, set_name
    assert len(spec.candidates) >= 12
    families = {item.family for item in spec.forget_eval}
    assert {"wording", "typo", "casing", "role_play"} <= families
    assert len([f for f in families if f and f.startswith("language_")]) >= 2


@pytest.mark.parametrize("name", CONCEPT_FILES)
def test_concept_files_do_not_give_the_answer_away(name):
    spec = load_concept(name).spec
    for set_name in ("forget_train", "forget_eval", "neighbors", "retain_train", "retain_eval", "relearn",
                     "recommend_train", "recommend_eval"):
        for item in spec.items(set_name):
            assert not any(a.casefold() in item.prompt.casefold() for a in spec.answers), (set_name, item.prompt)
    anchored = spec.neighbor_split()["anchored"]
    for i in anchored:  # anchored neighbours have the multiple-choice view; unseen ones are new titles
        assert spec.neighbors[i].answer.casefold() in {c.casefold() for c in spec.candidates}


@pytest.mark.parametrize("name", CONCEPT_FILES)
def test_concept_files_have_unseen_neighbours_that_no_training_set_mentions(name):
    spec = load_concept(name).spec
    unseen = [spec.neighbors[i] for i in spec.neighbor_split()["unseen"]]
    assert len(unseen) >= 12
    train_text = " ".join(it.prompt.casefold() + " " + (it.answer or "").casefold()
                          for s in TRAIN_SETS for it in spec.items(s))
    for item in unseen:  # a plain substring check, stricter than the whole-word rule
        assert item.answer.casefold() not in train_text, item.answer
        assert not spec.is_concept_answer(item.answer)


def test_inception_is_the_default_and_second_concept_is_not_a_neighbour():
    inception = load_concept("inception").spec
    assert inception.answers[0] == "Inception"
    others = [n for n in shipped_concepts() if n != "inception"]
    assert others, "a second concept ships for incremental mode"
    for other in others:
        spec = load_concept(other).spec
        neighbour_titles = {c.casefold() for c in inception.candidates}
        assert spec.answers[0].casefold() not in neighbour_titles


def test_anchored_and_unseen_follow_the_documented_rule(tmp_path, good):
    good["retain_train"].append({"prompt": "Name a film.", "answer": "  the   MATRIX "})  # answer: case, spaces
    good["relearn"].append({"prompt": "Memento was told backwards."})  # inside a passage, whole words
    good["relearn"].append({"prompt": "Interstellars and interstellarish trips."})  # inside longer words only
    good["neighbors"].append({"prompt": "Which film is the concept itself here?", "answer": "inception"})
    spec = load_concept(_write(tmp_path, good)).spec
    assert spec.training_appearance("The Matrix") == "retain_train"
    assert spec.training_appearance("memento") == "relearn"
    assert spec.training_appearance("Interstellar") is None  # `Interstellars`: not the whole word
    assert spec.training_appearance("Inception") == "forget_train"  # forget items answer with the concept
    by_answer = {spec.neighbors[i].answer: status for status, idx in spec.neighbor_split().items() for i in idx}
    assert by_answer == {"Interstellar": "unseen", "The Matrix": "anchored", "Memento": "anchored",
                         "inception": "anchored"}


def test_a_concept_without_unseen_neighbours_is_a_warning_not_an_error(tmp_path, good):
    from agmask.concepts.schema import ConceptWarning

    good["relearn"].append({"prompt": "Interstellar, The Matrix and Memento are films."})
    with pytest.warns(ConceptWarning, match="unseen"):
        spec = load_concept(_write(tmp_path, good)).spec
    assert spec.neighbor_split()["unseen"] == []


def test_kind_defaults_to_film(tmp_path, good):
    assert load_concept(_write(tmp_path, good)).spec.kind == "film"
    good["kind"] = "book series"
    assert load_concept(_write(tmp_path, good)).spec.kind == "book series"


def _write(tmp_path, data) -> str:
    path = tmp_path / "concept.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


@pytest.fixture
def good(tiny_concept_path) -> dict:
    return yaml.safe_load(tiny_concept_path.read_text())


def _error(tmp_path, data) -> str:
    path = _write(tmp_path, data)
    with pytest.raises(ConceptError) as info:
        load_concept(path)
    message = str(info.value)
    assert "\n" not in message and path in message
    return message


def test_unknown_top_level_key(tmp_path, good):
    good["forget_targets"] = "x"
    assert "field forget_targets: unknown key" in _error(tmp_path, good)


def test_unknown_item_key(tmp_path, good):
    good["probes"][1]["fact"] = ["x"]
    assert "field probes[1].fact: unknown key" in _error(tmp_path, good)


@pytest.mark.parametrize("set_name", ["forget_train", "forget_eval", "probes", "neighbors", "retain_train",
                                      "retain_eval", "relearn"])
def test_empty_set(tmp_path, good, set_name):
    good[set_name] = []
    assert f"field {set_name}:" in _error(tmp_path, good)


def test_missing_set(tmp_path, good):
    del good["relearn"]
    assert "field relearn: Field required" in _error(tmp_path, good)


@pytest.mark.parametrize("train", TRAIN_SETS)
@pytest.mark.parametrize("evaluation", EVAL_SETS)
def test_overlap_between_training_and_evaluation(tmp_path, good, train, evaluation):
    item = dict(good[evaluation][0])
    item["prompt"] = "  " + item["prompt"].upper() + " "  # case and whitespace do not hide an overlap
    if train == "recommend_train":  # a recommendation item has no answer or facts of its own
        item.pop("answer", None), item.pop("facts", None)
    else:
        item["answer"] = item.get("answer") or "something"
    good[train].append(item)
    message = _error(tmp_path, good)
    assert evaluation in message and train in message and "overlap" in message


def test_blank_prompt(tmp_path, good):
    good["forget_eval"][2]["prompt"] = "   "
    assert "field forget_eval[2].prompt: prompt is blank" in _error(tmp_path, good)


def test_candidates_must_include_the_concept(tmp_path, good):
    good["candidates"] = ["Interstellar", "The Matrix"]
    assert "field (top level): candidates must include" in _error(tmp_path, good)


def test_neighbors_need_answers(tmp_path, good):
    del good["neighbors"][0]["answer"]
    assert "field neighbors: item 0" in _error(tmp_path, good)


def test_duplicate_candidates(tmp_path, good):
    good["candidates"].append("the matrix")
    assert "field candidates: contains duplicates" in _error(tmp_path, good)


def test_bad_name(tmp_path, good):
    good["name"] = "Has Spaces"
    assert "field name:" in _error(tmp_path, good)


def test_invalid_yaml_names_the_line(tmp_path):
    assert "not valid YAML at line 3" in _error(tmp_path, "name: x\nanswers: [a, b\n")


def test_not_a_mapping(tmp_path):
    assert "expected a mapping" in _error(tmp_path, "- just\n- a list\n")


def test_numbers_are_accepted_as_strings(tmp_path, good):
    good["retain_eval"][0]["answer"] = 56
    spec = load_concept(_write(tmp_path, good)).spec
    assert spec.retain_eval[0].answer == "56"


def test_unknown_shipped_name_and_missing_file():
    with pytest.raises(ConceptError, match="unknown concept 'nope'.*inception"):
        load_concept("nope")
    with pytest.raises(ConceptError, match="does not exist"):
        load_concept("/nonexistent/concept.yaml")


def test_recommend_sets_are_optional_and_default_to_the_recommend_lead(tiny_concept_path):
    old = load_concept(str(tiny_concept_path.parent / "tiny_concept2.yaml")).spec  # a file without them
    assert old.recommend_train == [] and old.recommend_eval == []
    spec = load_concept(str(tiny_concept_path)).spec
    assert len(spec.recommend_train) == 3 and len(spec.recommend_eval) == 4
    assert spec.lead_for("recommend_eval") == spec.lead_for("recommend_train") == 'I recommend "'
    assert spec.lead_for("forget_eval") == 'The movie is "'
    assert spec.concept_candidates() == [0]


def test_recommend_lead_can_be_set(tmp_path, good):
    good["lead"]["recommend_eval"] = 'My pick is "'
    assert load_concept(_write(tmp_path, good)).spec.lead_for("recommend_eval") == 'My pick is "'


@pytest.mark.parametrize("key, value", [("answer", "Memento"), ("facts", ["Nolan"])])
def test_recommend_items_take_no_answer_or_facts(tmp_path, good, key, value):
    good["recommend_eval"][1][key] = value
    message = _error(tmp_path, good)
    assert "field recommend_eval:" in message and "item 1" in message and "no `answer` or `facts`" in message


@pytest.mark.parametrize("recommend, other", [("recommend_train", "forget_train"), ("recommend_eval", "forget_eval"),
                                              ("recommend_eval", "neighbors"), ("recommend_train", "relearn")])
def test_recommend_prompts_appear_in_no_other_set(tmp_path, good, recommend, other):
    """Train/train and eval/eval pairs too: a recommendation prompt belongs to its set alone."""
    good[recommend].append({"prompt": good[other][0]["prompt"].lower()})
    message = _error(tmp_path, good)
    assert recommend in message and other in message and "share no prompt" in message


def test_recommend_eval_and_train_do_not_overlap(tmp_path, good):
    good["recommend_train"].append({"prompt": good["recommend_eval"][0]["prompt"]})
    message = _error(tmp_path, good)
    assert "recommend_eval" in message and "recommend_train" in message and "overlap" in message


@pytest.mark.parametrize("name", shipped_concepts())
def test_shipped_recommend_prompts_are_open_requests(name):
    """Recommendation prompts spread over at least five kinds of request (director, actor, genre, ...), each
    kind with two or more prompts."""
    spec = load_concept(name).spec
    for set_name in ("recommend_train", "recommend_eval"):
        kinds = [it.family for it in spec.items(set_name)]
        assert None not in kinds and len(set(kinds)) >= 5, set_name
        assert all(kinds.count(k) >= 2 for k in set(kinds)), set_name


def test_the_non_film_concept_gets_adversarial_prompts_that_read_naturally():
    import re

    from agmask.evaluate.adversarial import FAMILIES, build_adversarial

    spec = load_concept("harry-potter").spec
    assert spec.kind == "book series"
    fams = build_adversarial(spec)
    assert set(fams) == set(FAMILIES)
    for family, prompts in fams.items():
        for a in prompts:
            assert not re.search(r"film|movie|cine", a.prompt + a.lead, re.IGNORECASE), (family, a.prompt, a.lead)
    assert fams["prefix_injection"][0].lead == 'Sure, I know this one. The book series is "'
    assert fams["reverse_query"][0].prompt.startswith("Name a book series connected to ")
    assert fams["fill_blank"][0].prompt.startswith('Fill in the blank with a book series name: "The book series ____')


def test_a_neighbour_tag_that_contradicts_the_rule_is_an_error(tmp_path, good):
    good["neighbors"][0]["family"] = "anchored"  # Interstellar appears in no training set of the tiny concept
    assert "neighbors[0] is tagged anchored but its answer 'Interstellar' appears in no training set" in \
        _error(tmp_path, good)
    good["neighbors"][0]["family"] = "unseen"
    good["relearn"].append({"prompt": "Interstellar was filmed in Iceland."})
    assert "neighbors[0] is tagged unseen but its answer 'Interstellar' appears in relearn" in _error(tmp_path, good)


def test_a_trailing_question_mark_does_not_hide_an_overlap(tmp_path, good):
    item = dict(good["forget_eval"][0])
    item["prompt"] = item["prompt"].rstrip("?") + " ."  # "What movie has Cobb planting an idea ."
    good["forget_train"].append(item)
    assert "overlap" in _error(tmp_path, good)


def test_a_blank_answer_is_refused_not_replaced_by_the_concept(tmp_path, good):
    good["forget_eval"][0]["answer"] = ""
    assert "field forget_eval[0].answer: answer is blank" in _error(tmp_path, good)


def test_a_directory_or_a_non_utf8_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConceptError, match="is a directory; pass a concept YAML file"):
        load_concept(str(tmp_path))
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConceptError, match=r"not UTF-8 text \(byte 9\)"):
        load_concept(str(path))
