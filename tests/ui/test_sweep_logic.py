"""The Sweep dialog's logic without a browser: reading the values a person types, spacing a range,
checking values against the param's schema (naming the param), the default target, the results
rows and what "Apply best" sets; and the dialog itself through the simulated user."""

from __future__ import annotations

import asyncio

import pytest

from nodeflow.sweep import MAX_BRANCHES
from nodeflow.ui.forms import sweep_kind
from nodeflow.ui.sweep_panel import (JUDGE_ORDER, SweepInputError, best_values, branches_text, check_values,
                                     default_target, freeze_boundaries, judge_label, judge_options, parse_values,
                                     result_rows, spaced, sweepable_params)
from tests.core.conftest import make_graph

from .server import pack_registry

LR = {"type": "number", "exclusiveMinimum": 0, "maximum": 10}
EPOCHS = {"type": "integer", "minimum": 1, "maximum": 1000}
OPTIMIZER = {"enum": ["sgd", "adam", "rmsprop"], "type": "string"}


def test_which_params_get_a_sweep():
    assert sweep_kind(LR) == "number" and sweep_kind(EPOCHS) == "int" and sweep_kind(OPTIMIZER) == "choice"
    assert sweep_kind({"type": "array", "items": {"type": "string"}, "x-widget": "layers"}) == "layers"
    assert sweep_kind({"type": "boolean"}) is None and sweep_kind({"type": "string"}) is None
    assert sweep_kind({"const": "only"}) is None  # one allowed value: nothing to sweep


def test_typed_values_are_read_as_numbers_and_bad_ones_name_the_param():
    assert parse_values("train.lr", "1e-5, 1e-4;0.001  0.01", "number") == [1e-5, 1e-4, 0.001, 0.01]
    assert parse_values("train.epochs", "2, 4 8", "int") == [2, 4, 8]
    assert parse_values("train.epochs", "3.0", "int") == [3] and isinstance(parse_values("e", "3.0", "int")[0], int)
    for text, kind, words in [("", "number", "train.lr: give at least one value, e.g. 1e-4, 1e-3"),
                              ("1e-4, fast", "number", "train.lr: 'fast' is not a number"),
                              ("inf", "number", "train.lr: 'inf' is not a finite number"),
                              ("2.5", "int", "train.lr: '2.5' is not a whole number")]:
        with pytest.raises(SweepInputError) as caught:
            parse_values("train.lr", text, kind)
        assert str(caught.value) == words


def test_a_range_is_spaced_linearly_or_on_a_log_scale():
    assert spaced("train.lr", 1e-5, 1e-2, 4, "log", "number") == [1e-5, 1e-4, 1e-3, 1e-2]
    assert spaced("train.lr", 0.1, 0.5, 5, "linear", "number") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert spaced("train.epochs", 1, 3, 5, "linear", "int") == [1, 2, 3]  # rounded, repeats dropped
    assert spaced("train.lr", 0.3, 0.9, 1, "log", "number") == [0.3]
    with pytest.raises(SweepInputError, match="train.lr: a log scale needs a start and a stop above 0"):
        spaced("train.lr", 0, 1, 3, "log", "number")
    with pytest.raises(SweepInputError, match=f"train.lr: the count must be a whole number from 1 to {MAX_BRANCHES}"):
        spaced("train.lr", 1, 2, MAX_BRANCHES + 1, "linear", "number")
    with pytest.raises(SweepInputError, match="train.lr: give a start, a stop and a count"):
        spaced("train.lr", None, 2, 3, "linear", "number")


def test_values_are_checked_against_the_params_schema_naming_the_param():
    check_values("train.lr", LR, [1e-5, 10])
    check_values("train.opt", OPTIMIZER, ["sgd", "adam"])
    check_values("ft.unfreeze", {"type": "array", "x-widget": "layers"}, [["block5"], ["block4", "block5"]])
    for name, prop, values, message in [
            ("train.lr", LR, [0.001, 0], "train.lr: 0 is outside the allowed range (0 … 10]"),
            ("train.lr", LR, [11], "train.lr: 11 is outside the allowed range (0 … 10]"),
            ("train.epochs", EPOCHS, [0], "train.epochs: 0 is outside the allowed range [1 … 1000]"),
            ("train.epochs", EPOCHS, [2.5], "train.epochs: 2.5 is not a whole number"),
            ("train.lr", LR, ["x"], 'train.lr: "x" is not a number'),
            ("train.lr", LR, [True], "train.lr: true is not a number"),
            ("train.lr", LR, [0.1, 0.1], "train.lr: 0.1 is given twice"),
            ("train.opt", OPTIMIZER, ["adamw"], 'train.opt: "adamw" is not one of sgd, adam, rmsprop'),
            ("train.opt", OPTIMIZER, [], "train.opt: choose at least one value")]:
        with pytest.raises(SweepInputError) as caught:
            check_values(name, prop, values)
        assert str(caught.value) == message


def test_freeze_boundaries_start_from_the_last_block():
    layers = [{"name": "head", "trainable": True}, {"name": "block3"}, {"name": "block4"}, {"name": "block5"}]
    layers = [layers[1], layers[2], layers[3], layers[0]]
    assert freeze_boundaries(layers) == [["block5"], ["block4", "block5"], ["block3", "block4", "block5"]]


def test_the_default_target_is_the_last_trainer_or_evaluation_below_the_node():
    graph = make_graph({"data": ("d", {}), "model": ("m", {}), "train": ("t", {}), "ft": ("f", {}),
                        "train2": ("t", {}), "evaluate": ("e", {}), "side": ("m", {})},
                       ["model.x->train.m", "data.x->train.d", "train.x->ft.m", "ft.x->train2.m",
                        "train2.x->evaluate.m", "data.x->evaluate.d"])
    categories = {"d": "Data", "m": "Model", "t": "Training", "f": "Training", "e": "Evaluate"}
    assert default_target(graph, categories, "ft") == "evaluate"
    assert default_target(graph, categories, "model") == "evaluate"
    assert default_target(graph, categories, "side") == "side"  # nothing judged below it: the node itself


def test_judge_at_lists_validation_metrics_first_and_test_ones_last(tmp_path):
    from nodeflow.node import Registry
    from tests.nodes.graphs import error_analysis_graph

    graph = error_analysis_graph(tmp_path)  # ... → train → eval (test) and errors (test)
    splits, default = judge_options(graph, Registry.discover(plugins=False), "eval")
    names = list(splits)
    assert default == names[0] == "train.val_accuracy" and names[1] == "train.val_loss"
    assert [splits[n] for n in names] == sorted((splits[n] for n in names), key=JUDGE_ORDER.index)
    assert "eval.accuracy" in names and splits["eval.accuracy"] == "test"
    assert "errors.error_rate" not in names  # not upstream of the target: it does not run
    assert not any(n.endswith(("_images", "samples")) for n in names)  # counts never judge
    assert judge_label("eval.accuracy", "test") == "eval.accuracy (test: held out, for the end)"
    assert judge_options(graph, Registry.discover(plugins=False), "errors")[1] == "train.val_accuracy"
    assert judge_options(graph, pack_registry(), "eval") == ({}, None)  # unknown types: nothing to offer


def test_sweepable_params_of_a_graph():
    graph = make_graph({"c": ("test.constant", {}), "d": ("test.describe", {}), "s": ("test.slow", {})}, [])
    catalogue = {e["type"]: e for e in pack_registry().catalogue()}
    assert list(sweepable_params(graph, catalogue)) == ["c.value", "d.style", "s.steps", "s.delay"]


SWEEP = {"id": 3, "grid": [["train.lr", [1e-4, 1e-3]], ["train.optimizer", ["sgd", "adam"]]], "metric": "eval.accuracy",
         "best": 1, "branches": [
             {"branch": 1, "params": {"train.lr": 1e-4, "train.optimizer": "sgd"}, "run": 7, "status": "done",
              "position": None, "value": 0.5, "seconds": 3.25, "error": None, "best": False},
             {"branch": 2, "params": {"train.lr": 1e-4, "train.optimizer": "adam"}, "run": 8, "status": "done",
              "position": None, "value": 0.875, "seconds": 2.0, "error": None, "best": True},
             {"branch": 3, "params": {"train.lr": 1e-3, "train.optimizer": "sgd"}, "run": 9, "status": "queued",
              "position": 1, "value": None, "seconds": None, "error": None, "best": False}]}


def test_result_rows_and_the_best_values():
    rows = result_rows(SWEEP)
    assert [(r["p0"], r["p1"], r["status"], r["value"], r["time"], r["best"]) for r in rows] == [
        ("0.0001", "sgd", "done", "50%", "3.2s", ""), ("0.0001", "adam", "done", "87.5%", "2.0s", "★ best"),
        ("0.001", "sgd", "queued #1", "–", "–", "")]
    # a tie: no star, both branches say so
    tied = {**SWEEP, "branches": [{**b, "best": False, "tie": b["branch"] in (1, 2)} for b in SWEEP["branches"]]}
    assert [r["best"] for r in result_rows(tied)] == ["= tie", "= tie", ""]
    assert best_values(SWEEP) == {"train": {"lr": 1e-4, "optimizer": "adam"}}
    assert best_values({**SWEEP, "best": None}) is None
    assert branches_text(1) == "1 branch" and branches_text(4) == "4 branches"


async def test_the_dialog_counts_branches_refuses_a_bad_value_and_starts_the_sweep(editor):
    """Simulated user: the form's Sweep button, two values, the count, a refused value, the results."""
    from nodeflow.ui.flow_editor import FlowEditor

    user, session, _ = editor
    session.document.edit("remove_node", id="add2")  # unwired in the demo graph: a branch of it could not run
    await user.open("/")
    user.find(FlowEditor).trigger("select", {"ids": ["c1"]})
    await user.should_see(marker="sweep-value")
    user.find(marker="sweep-value").click()
    await user.should_see("Sweep c1.value")
    values = user.find(marker="sweep-values-c1.value")
    values.type("1, 3")
    await user.should_see("2 branches")
    values.clear().type("1, 3e7")
    await user.should_see("2 branches")
    user.find("Start sweep").click()
    await user.should_see("c1.value: 30000000 is outside the allowed range [-1e+06 … 1e+06]")
    assert session.runs.list() == []  # nothing queued
    values.clear().type("1, 3")
    target = next(iter(user.find(marker="sweep-target").elements))
    assert target.value == "c1"  # no trainer or evaluation below it: the node itself
    target.set_value("add")
    user.find("Start sweep").click()
    await user.should_see("Sweep 1")
    for _ in range(200):
        if session.sweeps.get(1)["status"] == "done":
            break
        await asyncio.sleep(0.05)
    sweep = session.sweeps.get(1)
    assert [b["params"] for b in sweep["branches"]] == [{"c1.value": 1}, {"c1.value": 3}]
    assert sweep["metric"] == "add.sum" and [b["value"] for b in sweep["branches"]] == [2.0, 4.0]
    assert sweep["best"] == 1 and {r["source"] for r in session.runs.list()} == {"sweep:1"}
    table = next(iter(user.find(marker="sweep-table").elements))
    for _ in range(40):  # the results view polls
        if [r["best"] for r in table.rows] == ["", "★ best"]:
            break
        await asyncio.sleep(0.05)
    assert [(r["p0"], r["status"], r["value"], r["best"]) for r in table.rows] == [
        ("1", "done", "2", ""), ("3", "done", "4", "★ best")]
    user.find("Apply best").click()
    await user.should_see("Applied c1.value=3")
    assert session.document.graph.node("c1").params["value"] == 3
    assert session.document.undo() and session.document.graph.node("c1").params["value"] == 2  # one undo step


async def test_a_second_param_makes_a_grid_and_a_choice_is_ticked(editor):
    from nicegui import ui

    from nodeflow.ui.flow_editor import FlowEditor

    user, session, _ = editor
    await user.open("/")
    user.find(FlowEditor).trigger("select", {"ids": ["c1"]})
    await user.should_see(marker="sweep-value")
    user.find(marker="sweep-value").click()
    user.find(marker="sweep-values-c1.value").type("1, 2, 3")
    await user.should_see("3 branches")
    add = next(iter(user.find(marker="sweep-add").elements))
    assert "desc.style" in add.options and "c1.value" not in add.options
    add.set_value("desc.style")
    user.find(marker="sweep-add-button").click()
    await user.should_see("desc.style")
    await user.should_see("3 branches")  # the current style, plain, is ticked
    user.find(kind=ui.checkbox, content="fancy").click()
    await user.should_see("6 branches")
    user.find(kind=ui.checkbox, content="plain").click()
    user.find(kind=ui.checkbox, content="fancy").click()
    user.find("Start sweep").click()
    await user.should_see("desc.style: choose at least one value")
    user.find(marker="sweep-values-c1.value").clear().type(", ".join(map(str, range(40))))
    user.find(kind=ui.checkbox, content="fancy").click()
    user.find(kind=ui.checkbox, content="plain").click()
    await user.should_see(f"80 branches (at most {MAX_BRANCHES})")
    user.find("Start sweep").click()
    await user.should_see(f"80 branches: a sweep may have at most {MAX_BRANCHES}; give fewer values")
    assert session.runs.list() == []


async def test_cancel_sweep_in_the_results_stops_every_branch(editor):
    from nodeflow.ui.flow_editor import FlowEditor

    user, session, _ = editor
    session.document.edit("set_params", id="slow", params={"steps": 100_000, "delay": 0.01})
    await user.open("/")
    user.find(FlowEditor).trigger("select", {"ids": ["slow"]})
    await user.should_see(marker="sweep-steps")
    user.find(marker="sweep-steps").click()
    user.find(marker="sweep-values-slow.steps").type("99999, 100000")
    await user.should_see("2 branches")
    user.find("Start sweep").click()
    await user.should_see("Sweep 1")
    for _ in range(100):
        if session.sweeps.get(1)["progress"] == "branch 1 of 2":
            break
        await asyncio.sleep(0.05)
    await user.should_see("branch 1 of 2 · running")
    user.find("Cancel sweep").click()
    await user.should_see("Sweep 1 cancelled; the running branch stops at its next step")
    for _ in range(200):
        if session.sweeps.get(1)["status"] == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert [b["status"] for b in session.sweeps.get(1)["branches"]] == ["cancelled", "cancelled"]
    await user.should_see("2 of 2 branches finished · cancelled", retries=30)


def test_a_branch_is_named_by_its_values_in_the_chart_legend():
    from nodeflow.ui.sweep_panel import branch_label, branch_runs

    assert branch_label({"train.lr": 0.001}) == "lr=0.001"
    assert branch_label({"finetune.unfreeze": ["block4", "block5"], "train.lr": 1e-05}) == \
        "unfreeze=block4+block5 · lr=1e-05"
    assert branch_label({"finetune.unfreeze": []}) == "unfreeze=none"
    sweep = {"branches": [{"run": 7, "params": {"train.epochs": 3}, "curves": {"train": {"val_loss": [[1, 0.5]]}}}]}
    assert branch_runs(sweep) == [{"id": 7, "label": "epochs=3", "curves": {"train": {"val_loss": [[1, 0.5]]}}}]
