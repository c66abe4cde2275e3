"""Concept specs: the shipped ones are valid and big enough; every bad file gets a one-line error."""
from __future__ import annotations

import pytest
import yaml

from agmask.concepts import EVAL_SETS, TRAIN_SETS, load_concept, shipped_concepts
from agmask.errors import ConceptError

MINIMUM = {"forget_train": 40, "forget_eval": 40, "probes": 15, "neighbors": 30, "retain_train": 30,
           "retain_eval": 30, "relearn": 20}


@pytest.mark.parametrize("name", shipped_concepts())
def test_shipped_concepts_meet_the_minimum_sizes(name):
    spec = load_concept(name).spec
    for set_name, n in MINIMUM.items():
        assert len(spec.items(set_name)) >= n, set_name
    assert len(spec.candidates) >= 12
    families = {item.family for item in spec.forget_eval}
    assert {"wording", "typo", "casing", "role_play"} <= families
    assert len([f for f in families if f and f.startswith("language_")]) >= 2


@pytest.mark.parametrize("name", shipped_concepts())
def test_shipped_concepts_do_not_give_the_answer_away(name):
    spec = load_concept(name).spec
    for set_name in ("forget_train", "forget_eval", "neighbors", "retain_train", "retain_eval", "relearn"):
        for item in spec.items(set_name):
            assert not any(a.casefold() in item.prompt.casefold() for a in spec.answers), (set_name, item.prompt)
    for item in spec.neighbors:
        assert item.answer.casefold() in {c.casefold() for c in spec.candidates}


def test_inception_is_the_default_and_second_concept_is_not_a_neighbour():
    inception = load_concept("inception").spec
    assert inception.answers[0] == "Inception"
    others = [n for n in shipped_concepts() if n != "inception"]
    assert others, "a second concept ships for incremental mode"
    for other in others:
        spec = load_concept(other).spec
        neighbour_titles = {c.casefold() for c in inception.candidates}
        assert spec.answers[0].casefold() not in neighbour_titles


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
