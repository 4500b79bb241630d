"""The technique templates validate, run on generated images with weights: none, and their
techniques are reachable with --set; the editor's forms offer every technique option."""

from __future__ import annotations

import json

import pytest

from nodeflow.events import Metric
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.templates import template_path
from tests.clirun import nodeflow_here
from tests.imagegen import make_image_set
from tests.nodes.conftest import run, with_params

TINY = {"input.height": 32, "input.width": 32, "formatter.height": 32, "formatter.width": 32, "formatter.resize_to": 36}
HOTDOG = {**TINY, "resnet18_ft.weights": "none", "train_ft.epochs": 2, "train_sc.epochs": 2, "train_ft.batch_size": 16,
          "train_sc.batch_size": 16, "train_ft.lr": 1e-2, "train_sc.lr": 1e-2}


def test_technique_templates_validate_once_the_dataset_is_set(registry, shapes, workspace):
    for name in ("hotdog_resnet18_finetune", "cnn_codes_linear"):
        graph = with_params(Graph.load(template_path(name)), {"dataset.root": str(shapes)})
        errors = [p for p in Executor(registry, workspace).validate(graph) if p.blocking]  # warnings may say "offline"
        assert errors == [], name


@pytest.mark.slow
def test_hotdog_template_runs_both_twins_with_techniques_set_from_the_cli(shapes, tmp_path, capsys):
    values = {**HOTDOG, "dataset.root": str(shapes), "dataset.max_per_class": 12, "train_ft.batch_augment": "mixup", "train_ft.schedule": "sgdr",
              "train_ft.block_lrs": [1e-3, 1e-2], "train_sc.optimizer": "adabound", "train_sc.label_smoothing": 0.1}
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    cmd = ["--no-plugins", "run", "hotdog_resnet18_finetune", "--workspace", str(tmp_path / "ws"), "--device", "cpu",
           "--quiet", "--report", str(tmp_path / "report.json"), *sets]
    done = nodeflow_here(capsys, cmd)  # in this process: about the report, not about a process
    assert done.returncode == 0, done.stderr
    nodes = json.loads((tmp_path / "report.json").read_text())["nodes"]
    statuses = {k: n["status"] for k, n in nodes.items()}
    # with weights none the scratch twin's model nodes are the fine-tune twin's, key for key: computed once
    assert {k for k, s in statuses.items() if s != "ran"} <= {"resnet18_sc", "pool_sc", "fc_sc"}, statuses
    assert statuses["train_ft"] == statuses["train_sc"] == "ran", statuses
    compared = nodes["compare"]["metrics"]
    assert {"scratch_val_accuracy", "finetune_val_accuracy", "scratch_val_loss", "finetune_val_loss"} <= set(compared)
    wrong = nodeflow_here(capsys, [*cmd, "--set", "train_ft.batch_augment=cutout"])
    assert wrong.returncode == 1 and "train_ft.batch_augment" in wrong.stderr


@pytest.mark.slow
def test_compare_node_draws_both_runs_on_one_chart(registry, shapes, tmp_path):
    events = []
    graph = with_params(Graph.load(template_path("hotdog_resnet18_finetune")), {**HOTDOG, "dataset.root": str(shapes)})
    report = Executor(registry, tmp_path / "ws", device="cpu", listeners=[events.append]).run(graph, target="compare")
    assert report.ok, report.to_json()
    series = {}
    for e in events:
        if isinstance(e, Metric) and e.node_id == "compare":
            series.setdefault(e.name, []).append(e.step)
    assert series["scratch_val_accuracy"] == series["finetune_val_accuracy"] == [1, 2]
    from nodeflow.ui.outputs import group_series

    charts = group_series({name: [{"step": s, "value": 0.5} for s in steps] for name, steps in series.items()})
    assert {"scratch_val_accuracy", "finetune_val_accuracy"} <= set(charts["Accuracy"])
    fc = report.outputs["train_ft"]["model"]
    assert fc.spec["layers"][-1]["init"] == "xavier_uniform" and fc.spec["layers"][-1]["name"] == "fc"


@pytest.mark.slow
def test_cnn_codes_linear_template_learns_and_reports_top_k(registry, tmp_path):
    four = make_image_set(tmp_path / "four", ("circle", "square", "stripes", "cross"), per_class=30, size=32, seed=5)
    graph = with_params(Graph.load(template_path("cnn_codes_linear")),
                        {**TINY, "dataset.root": str(four), "backbone.weights": "none", "evaluate.top_k": 2})
    report = run(registry, graph, tmp_path / "ws")
    assert report.ok, report.to_json()
    metrics = report.nodes["evaluate"].metrics
    assert metrics["accuracy"] >= 0.6  # four classes: chance is 0.25
    assert metrics["top2_accuracy"] >= metrics["accuracy"]
    model = report.outputs["linear"]["model"]
    assert model.trained and model.spec["layers"][-1]["kind"] == "dense" and set(model.frozen) >= {"stem", "layer4"}
    advice = report.outputs["recommend"]["recommendation"].tables["recommendation"]
    assert advice["strategy"] == "feature_extraction" and "layer4" not in advice["how"]


def test_forms_offer_every_technique(registry):
    trainer = registry.get("train.trainer").describe()
    props = trainer["params_schema"]["properties"]
    assert {"mixup", "cutmix", "ricap"} <= set(props["batch_augment"]["enum"])
    assert "adabound" in props["optimizer"]["enum"] and "sgdr" in props["schedule"]["enum"]
    for name in ("block_lrs", "lr_decay", "mix_alpha", "distill_alpha", "distill_temperature", "label_smoothing",
                 "head_lr_mult", "final_lr", "sgdr_cycle", "sgdr_mult"):
        assert props[name].get("description"), name
    assert [p["name"] for p in trainer["inputs"] if p["optional"]] == ["teacher"]
    for node_type in ("train.lr_finder", "features.cnn_codes", "features.linear_classifier", "train.recommend",
                      "eval.compare_curves"):
        assert node_type in registry
    augment = registry.get("data.augment").describe()["params_schema"]["properties"]
    assert {"autoaugment", "randaugment", "trivialaugment"} <= set(augment["policy"]["enum"])
    assert "random_erasing" in augment
    assert "top_k" in registry.get("eval.evaluate").describe()["params_schema"]["properties"]


@pytest.mark.parametrize("template", ["hotdog_resnet18_finetune", "cnn_codes_linear"])
def test_templates_keep_no_machine_paths(template):
    text = template_path(template).read_text()
    assert "/home/" not in text and "/tmp/" not in text and "\\\\" not in text


def test_lr_finder_curve_is_charted_against_the_learning_rate():
    from nodeflow.ui.outputs import LR_CHART, chart_options, group_series

    points = [{"step": i, "value": 1.0 - i / 10, "lr": 10.0 ** (i - 6)} for i in range(5)]
    charts = group_series({"lr_finder_loss": points, "val_loss": [{"step": 1, "value": 0.5}]})
    assert list(charts) == [LR_CHART, "Loss"]
    options = chart_options(LR_CHART, charts[LR_CHART])
    assert options["xAxis"]["type"] == "log" and options["series"][0]["data"][0] == [1e-6, 1.0]
