"""The trainer's contract with the methods: sources drawn by key, references that travel with their examples,
a method defined outside the package trained by the unchanged trainer, clean errors, no method names inside."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from types import SimpleNamespace

import pytest
import torch

from agmask.concepts import load_concept
from agmask.errors import StageError
from agmask.lora import attach_lora
from agmask.scoring.encode import tokens
from agmask.stages.unlearn import Config
from agmask.unlearn import METHODS, data, objectives, trainer
from agmask.unlearn.methods import Method
from agmask.unlearn.sources import Plan, Setup, Source, forget_source, retain_source
from agmask.unlearn.trainer import _draw_orders, _draw_sizes, _step_indices, train
from runkit import PLAIN_NPO


@pytest.fixture
def spec(tiny_concept_path):
    return load_concept(str(tiny_concept_path)).spec


def _conf(**kw):
    return dataclasses.replace(Config(), **{**PLAIN_NPO, "steps": 3, "batch_size": 2, "lr": 5e-2, **kw})


def _examples(n: int) -> list[data.Example]:
    return [data.Example(f"question {i}? ", f"answer {i}") for i in range(n)]


def test_step_indices_walk_the_permutation_and_wrap_around():
    order = [4, 0, 3, 1, 2]
    assert _step_indices(order, 0, 2) == [4, 0]
    assert _step_indices(order, 1, 2) == [3, 1]
    assert _step_indices(order, 2, 2) == [2, 4]  # wraps to the start
    assert _step_indices(order, 3, 4) == [3, 1, 2, 4]  # step 3 starts at entry 12 % 5 = 2


def test_sources_that_share_a_draw_get_one_permutation_drawn_in_first_use_order():
    sources = {"a": Source(_examples(5), "x"), "b": Source(_examples(3), "y"), "c": Source(_examples(5), "x")}
    orders = _draw_orders(sources, torch.Generator().manual_seed(0))
    expected = torch.Generator().manual_seed(0)
    assert list(orders) == ["x", "y"]
    assert orders["x"] == torch.randperm(5, generator=expected).tolist()
    assert orders["y"] == torch.randperm(3, generator=expected).tolist()


def test_bad_sources_are_clean_errors():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(StageError, match="'b' has 3 examples but shares draw 'x' with a source of 5"):
        _draw_orders({"a": Source(_examples(5), "x"), "b": Source(_examples(3), "x")}, gen)
    with pytest.raises(StageError, match="'a' has no examples"):
        _draw_orders({"a": Source([], "x")}, gen)


def test_a_source_may_draw_its_own_number_per_step_if_every_process_gets_the_same_share():
    own = Source(_examples(3), "y", batch_size=2, batch_option="y_batch_size")
    assert _draw_sizes({"a": Source(_examples(5), "x"), "b": own}, 4, 1) == {"x": 4, "y": 2}
    assert _draw_sizes({"a": Source(_examples(5), "x"), "b": own}, 4, 2) == {"x": 4, "y": 2}  # halves of both
    with pytest.raises(StageError, match=r"unlearn.y_batch_size is 2 but 3 processes .* --set unlearn.y_batch_size=3"):
        _draw_sizes({"a": Source(_examples(5), "x"), "b": own}, 4, 3)
    with pytest.raises(StageError, match=r"unlearn.batch_size=4, unlearn.y_batch_size=3 split unevenly over 2"):
        _draw_sizes({"a": Source(_examples(5), "x"),
                     "b": Source(_examples(5), "y", batch_size=3, batch_option="y_batch_size")}, 4, 2)
    with pytest.raises(StageError, match="'b' draws 2 examples per step but shares draw 'x' with a source that draws 4"):
        _draw_sizes({"a": Source(_examples(5), "x"), "b": Source(_examples(5), "x", batch_size=2)}, 4, 1)


def test_a_batch_carries_the_references_of_its_own_examples(tiny):
    model, tok, _ = tiny
    examples = _examples(6)
    hidden = [torch.randn(len(tokens(tok, e.prefix + e.answer)), 4) for e in examples]  # stand-in cached inputs
    source = Source(examples, "x", start=(1, hidden),
                    refs={"value": torch.arange(6.0) * 10, "per_example": [torch.full((2,), float(i)) for i in range(6)]})
    batch = source.batch([4, 1], tok, torch.device("cpu"))
    assert batch.refs["value"].tolist() == [40.0, 10.0]
    assert [t.tolist() for t in batch.refs["per_example"]] == [[4.0, 4.0], [1.0, 1.0]]
    expected = data.collate(tok, [examples[4], examples[1]], torch.device("cpu"))
    assert torch.equal(batch.tokens.input_ids, expected.input_ids)
    assert batch.tokens.start_layer == 1
    assert torch.equal(batch.tokens.start_hidden[0, : hidden[4].shape[0]], hidden[4])


def test_the_option_sets_line_up(spec):
    from agmask.models import load

    _, tok, _ = load("tiny:llama")
    conf = _conf(max_forget=2, forget_all_leads=True)
    leads = data.training_leads(spec, spec.forget_train[:2], spec.retain_train)
    forget, target = data.forget_set(tok, spec, conf), data.target_set(tok, spec, conf)
    assert forget == data.forget_examples(tok, spec, spec.forget_train[:2], leads)
    assert len(target) == len(forget) == 2 * len(leads) * len(spec.answers)
    # lead-major, then item, then alias: example k of both sets is the same forget item
    for f, t in zip(forget, target):
        assert f.prefix.startswith(t.prefix) and t.answer.startswith(spec.forget_target)
    assert data.retain_set(tok, spec, _conf()) == data.retain_examples(tok, spec, spec.retain_train)
    assert len(data.retain_set(tok, spec, _conf(retain_all_leads=True))) == \
        len(data.training_leads(spec, spec.forget_train, spec.retain_train)) * len(spec.retain_train)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_prepares_sources_that_line_up_with_their_references(tiny, spec, name):
    model, tok, info = tiny
    adapter = attach_lora(model, None, layers=[1, 2], r=4)
    conf = _conf(target_weight=1.0, first_token_weight=1.0, recommend_weight=1.0, preference_weight=1.0)
    plan = METHODS[name].prepare(Setup(adapter.model, tok, spec, conf, [1, 2], torch.Generator().manual_seed(0), 1))
    assert plan.sources and callable(plan.loss)
    for source in plan.sources.values():
        assert source.start is not None and len(source.start[1]) == len(source.examples)
        for ref in source.refs.values():
            assert len(ref) == len(source.examples)
    batches = {n: s.batch([0, 1], tok, torch.device("cpu")) for n, s in plan.sources.items()}
    terms = plan.loss(adapter.model, batches)
    assert terms["loss"].requires_grad and all(t.dim() == 0 for t in terms.values())
    if plan.early_stop_term:
        assert plan.early_stop_term in terms


def test_a_new_source_joins_a_method_without_touching_the_trainer(tiny, spec):
    """A method written here, outside the package: the forget NPO of the default method plus a term on a
    source of its own (its own draw, its own reference). The trainer hands it every source's batch."""
    model, tok, info = tiny
    seen = []

    def prepare(setup: Setup) -> Plan:
        extra = setup.source(_examples(5), draw="extra")
        extra.refs["id"] = torch.arange(5)
        sources = {"forget": forget_source(setup), "retain": retain_source(setup), "extra": extra}

        def loss(model, batches):
            seen.append({n: b.tokens.input_ids.shape[0] for n, b in batches.items()})
            for i, row in zip(batches["extra"].refs["id"].tolist(), batches["extra"].tokens.input_ids):
                ids = data.collate(setup.tokenizer, [extra.examples[i]], row.device).input_ids[0]
                assert torch.equal(row[: ids.shape[0]], ids)  # the reference travels with its example
            forget = batches["forget"]
            logp = objectives.answer_logprob(model, forget.tokens)
            npo = objectives.npo(logp, forget.refs["answer_logprob"], setup.conf.npo_beta)
            extra_term = -objectives.answer_logprob(model, batches["extra"].tokens).mean()
            return {"forget_npo": npo, "extra_nll": extra_term, "loss": npo + 0.1 * extra_term}

        return Plan(sources, loss)

    method = Method("with_extra_source", "unmasked", prepare, "a test method")
    adapter = attach_lora(model, None, layers=[1, 2], r=4)
    rows = train(adapter, method, tok, spec, _conf())
    assert [list(r) for r in rows] == [["step", "forget_npo", "extra_nll", "loss", "grad_norm", "seconds"]] * 3
    assert seen == [{"forget": 2, "retain": 2, "extra": 2}] * 3


def test_fewer_examples_per_step_than_processes_is_a_clean_error(tiny, spec, monkeypatch):
    model, tok, info = tiny
    four = SimpleNamespace(process_index=0, num_processes=4)
    monkeypatch.setattr(trainer.distributed, "accelerator", lambda device="cpu": four)
    adapter = attach_lora(model, None, layers=[1], r=4)
    with pytest.raises(StageError, match="batch_size is 2 but 4 processes train"):
        train(adapter, METHODS["masked_lora"], tok, spec, _conf())


def test_the_trainer_names_no_method_and_no_source():
    """Every method and source name lives in the methods: none is a string constant of the trainer."""
    tree = ast.parse(inspect.getsource(trainer))
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    names = set(METHODS) | {"forget", "retain", "target", "forget_logratio", "rmu"}
    assert not strings & names, strings & names


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_a_decaying_schedule_logs_its_rate_from_lr_down_towards_zero(tiny, spec, schedule):
    model, tok, info = tiny
    adapter = attach_lora(model, None, layers=[1], r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf(steps=4, lr_schedule=schedule))
    rates = [r["lr"] for r in rows]
    assert rates[0] == pytest.approx(5e-2) and all(a > b > 0 for a, b in zip(rates, rates[1:]))
    expected = [5e-2 * (1 - s / 4) for s in range(4)] if schedule == "linear" else \
        [5e-2 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert rates == pytest.approx(expected)


def test_the_constant_schedule_logs_no_rate_and_trains_as_before(tiny, spec):
    model, tok, info = tiny
    adapter = attach_lora(model, None, layers=[1], r=4)
    rows = train(adapter, METHODS["masked_lora"], tok, spec, _conf())
    assert all("lr" not in r for r in rows)  # the recorded loss rows (test_unlearn_rows) pin the numbers
