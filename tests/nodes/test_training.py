"""Training really learns, transfer really helps, fine-tuning never touches its input, and a
trained model survives a trip through its files (safetensors, TorchScript, ONNX)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from nodeflow.events import Log, Metric, Preview, Progress
from nodeflow.node import Event, RunContext
from nodes.engine.images import loader
from nodes.engine.loop import network, set_mode
from nodes.ports import TRAINED_MODEL
from nodes.training import FineTune
from tests.imagegen import make_image_set
from tests.nodes.conftest import run
from tests.nodes.graphs import classifier_graph
from tests.nodes.test_ddp import SPEC, tiny  # noqa: F401  (tiny: the fixture)


@pytest.fixture(scope="module")
def trained(registry, shapes, tmp_path_factory):
    """A ResNet-18 trained from scratch on circles vs stripes, exported in every format."""
    folder = tmp_path_factory.mktemp("trained")
    events: list[Event] = []
    from nodeflow.executor import Executor

    executor = Executor(registry, folder / "ws", device="cpu", listeners=[events.append])
    report = executor.run(classifier_graph(shapes, epochs=4, export_to=folder / "export",
                                           formats=("safetensors", "torchscript", "onnx")))
    assert report.ok, report.to_json()
    return report, events, folder


def test_trainer_learns_and_logs_every_epoch(trained):
    report, events, _ = trained
    history = report.outputs["train"]["model"].history
    assert len(history) == 4
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert report.nodes["eval"].metrics["accuracy"] >= 0.8
    logged = [(e.name, e.step) for e in events if isinstance(e, Metric) and e.node_id == "train"]
    for name in ("train_loss", "val_loss", "val_accuracy"):
        assert [step for n, step in logged if n == name] == [1, 2, 3, 4]
    assert sum(n == "batch_loss" for n, _ in logged) > 4
    previews = {e.name for e in events if isinstance(e, Preview)}
    assert {"samples", "confusion_matrix", "metrics_table"} <= previews


def test_evaluate_reports_a_consistent_confusion_matrix(trained):
    metrics = trained[0].outputs["eval"]["metrics"]
    matrix = torch.tensor(metrics.tables["confusion_matrix"]["matrix"])
    assert matrix.sum() == metrics.values["samples"] == 20
    assert matrix.diag().sum() / matrix.sum() == pytest.approx(metrics.values["accuracy"])
    assert [row["class"] for row in metrics.tables["per_class"]] == ["cat", "dog"]


def test_exported_files_reproduce_the_models_outputs(trained, shapes):
    report, _, folder = trained
    model = report.outputs["train"]["model"]
    files = report.outputs["export"]["files"].files
    images = next(iter(loader(report.outputs["fmt"]["data"], "test", 8, train=False)))[0]
    expected = network(model, 2).eval()(images)
    scripted = torch.jit.load(files["torchscript"])
    assert torch.allclose(scripted(images), expected, atol=1e-4)
    onnx.checker.check_model(onnx.load(files["onnx"]))
    spec = json.loads(open(files["spec"]).read())
    assert spec["classes"] == ["cat", "dog"] and spec["spec"]["layers"][-1]["units"] == 2


def test_trained_model_survives_its_codec(trained, tmp_path):
    model = trained[0].outputs["train"]["model"]
    TRAINED_MODEL.codec.save(model, tmp_path)
    loaded = TRAINED_MODEL.codec.load(tmp_path)
    assert loaded.spec == model.spec and loaded.frozen == model.frozen and loaded.history == model.history
    assert all(torch.equal(loaded.state[k], v) for k, v in model.state.items())


def test_predict_classifies_a_folder(registry, trained, shapes, workspace):
    from nodes.evaluation import Predict

    model = trained[0].outputs["train"]["model"]
    ctx = RunContext("predict", workspace)
    rows = Predict().run(ctx, Predict.Params(folder=str(shapes / "test")), model)["predictions"]
    assert len(rows) == 20
    right = sum(row["label"] in row["file"].rsplit("/", 1)[-1] for row in rows)
    assert right >= 16


def test_finetune_returns_a_new_model_and_never_mutates_its_input(trained):
    model = trained[0].outputs["train"]["model"].with_(frozen=("stem", "layer1", "layer2", "layer3", "layer4"))
    before = {k: v.clone() for k, v in model.state.items()}
    params = FineTune.Params(unfreeze=["layer3", "layer4"], freeze_batchnorm=True)
    tuned = FineTune().run(RunContext("finetune", trained[2]), params, model)["model"]
    assert tuned is not model and tuned.frozen == ("stem", "layer1", "layer2") and tuned.bn_frozen
    assert model.frozen == ("stem", "layer1", "layer2", "layer3", "layer4") and not model.bn_frozen
    assert all(torch.equal(before[k], v) for k, v in model.state.items())
    net = network(tuned, 2)
    set_mode(net, True, tuned.frozen, tuned.bn_frozen)
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.dense1.training and not net.layer2.training


@pytest.mark.slow
def test_fine_tuning_a_pretrained_backbone_beats_training_from_scratch(registry, tmp_path):
    """Pretrain on one set of shapes, export, load the file as backbone weights, and learn other
    shapes from four images per class: the transferred features must win clearly."""
    source = make_image_set(tmp_path / "a", ("circle", "square", "cross", "checker"), per_class=80, seed=1,
                            fractions=(0.8, 0.2, 0.0))
    target = make_image_set(tmp_path / "b", ("triangle", "stripes", "circle"), per_class=40, seed=2,
                            fractions=(0.1, 0.1, 0.8))
    pre = run(registry, classifier_graph(source, epochs=8, export_to=tmp_path / "export"), tmp_path / "ws")
    assert pre.nodes["train"].metrics["val_accuracy"] >= 0.8, pre.to_json()
    weights = pre.outputs["export"]["files"].files["safetensors"]

    transfer = run(registry, classifier_graph(target, weights=weights, feature_extractor=True, epochs=10, lr=1e-2),
                   tmp_path / "ws")
    scratch = run(registry, classifier_graph(target, epochs=10), tmp_path / "ws")
    assert transfer.ok and scratch.ok
    tuned, fresh = transfer.nodes["eval"].metrics["accuracy"], scratch.nodes["eval"].metrics["accuracy"]
    assert tuned >= 0.8 and tuned >= fresh + 0.15, (tuned, fresh)


def test_an_interrupted_trainer_resumes_from_its_last_epoch(registry, shapes, tmp_path):
    from nodeflow.executor import Executor

    graph = classifier_graph(shapes, epochs=3)
    first = Executor(registry, tmp_path / "ws", device="cpu")
    first.subscribe(lambda e: first.interrupt() if isinstance(e, Metric) and e.name == "val_loss"
                    and e.step == 2 else None)
    assert first.run(graph, target="train").nodes["train"].status == "stopped"

    logs: list[str] = []
    again = Executor(registry, tmp_path / "ws", device="cpu",
                     listeners=[lambda e: logs.append(e.message) if isinstance(e, Log) else None])
    report = again.run(graph, target="train")
    assert report.nodes["train"].status == "ran"
    assert any("resuming after epoch 2" in line for line in logs)
    assert [h["epoch"] for h in report.outputs["train"]["model"].history] == [1, 2, 3]


def test_a_stopped_trainer_tells_the_epoch_it_reached_and_its_resumed_curves_start_at_epoch_one(tiny, tmp_path):
    """What the editor reads from the trainer's events: "epoch 2/5" while it runs, "stopped at
    epoch 2/5" after a stop, and curves of every epoch after it resumed from its checkpoint."""
    import threading

    from nodeflow.node import Interrupted
    from nodes.ports import ModelValue
    from nodes.training import Trainer

    params = Trainer.Params(optimizer="sgd", lr=0.1, epochs=5, batch_size=8, workers=0)
    stop, first = threading.Event(), []

    def listen(event) -> None:  # the stop button, pressed once epoch 2 is complete
        first.append(event)
        if isinstance(event, Progress) and event.epoch == 2:
            stop.set()

    ctx = RunContext("train", tmp_path, device="cpu", emit=listen, stop_flag=stop, key="k")
    with pytest.raises(Interrupted):
        Trainer().run(ctx, params, model=ModelValue(SPEC), data=tiny)
    assert (ctx.epoch, ctx.epochs) == (2, 5)
    told = [(e.epoch, e.epochs) for e in first if isinstance(e, Progress)]
    assert told[0] == (0, 5) and (1, 5) in told and told[-1] == (2, 5)

    again: list[Event] = []
    ctx = RunContext("train", tmp_path, device="cpu", emit=again.append, key="k")
    model = Trainer().run(ctx, params, model=ModelValue(SPEC), data=tiny)["model"]
    assert any("resuming after epoch 2" in e.message for e in again if isinstance(e, Log))
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        points = [(e.step, e.value) for e in again if isinstance(e, Metric) and e.name == name]
        assert points == [(h["epoch"], pytest.approx(h[name])) for h in model.history], name
