"""The catalogue's nodes honour a shared server's limits on one job (``ctx.limits``): an image size,
a batch or a number of devices over them is refused before any work starts, naming the node's
parameter and the admin's flag, in a run and in an estimate alike; the same graph under no limits
(the one-person editor, the command line) is not refused."""

from __future__ import annotations

import time

import pytest

from nodeflow.events import NodeFailed
from nodeflow.executor import Executor
from nodeflow.limits import JobLimits
from tests.nodes.conftest import with_params
from tests.nodes.graphs import classifier_graph

LIMITS = JobLimits(max_image_side=48, max_batch=16, max_devices=1)


def failed_run(registry, workspace, graph, target, limits=LIMITS):
    events = []
    report = Executor(registry, workspace, device="cpu", limits=limits).run(graph, target, listeners=[events.append])
    return report, {e.node_id: e for e in events if isinstance(e, NodeFailed)}


@pytest.mark.parametrize("values,node,param,flag", [
    ({"fmt.height": 64, "input.height": 64}, "fmt", "height", "--max-image-side"),
    ({"fmt.resize_to": 256}, "fmt", "resize_to", "--max-image-side"),
    ({"train.batch_size": 64}, "train", "batch_size", "--max-batch"),
    ({"train.devices": 2}, "train", "devices", "--max-devices"),
])
def test_a_setting_over_the_servers_limit_is_refused_before_work_starts(registry, shapes, tmp_path, values, node,
                                                                      param, flag):
    graph = with_params(classifier_graph(shapes, size=32, epochs=1), values)
    started = time.perf_counter()
    report, failed = failed_run(registry, tmp_path / "ws", graph, "train")
    assert not report.ok and set(failed) == {node}
    message = failed[node].message
    assert failed[node].param == param and f"{param} {graph.node(node).params[param]} is over this server's" in message
    assert f"(serve {flag})" in message, message
    assert time.perf_counter() - started < 60 and not (tmp_path / "ws" / "checkpoints").exists()  # nothing trained


def test_the_lr_finders_batch_is_held_to_the_limit_too(registry, shapes, tmp_path):
    data = classifier_graph(shapes, size=32).model_dump(mode="json")
    data["nodes"].append({"id": "lr", "type": "train.lr_finder", "params": {"batch_size": 32, "steps": 5}})
    data["edges"] += [{"source": "out", "source_port": "model", "target": "lr", "target_port": "model"},
                      {"source": "fmt", "source_port": "data", "target": "lr", "target_port": "data"}]
    from nodeflow.graph import Graph

    report, failed = failed_run(registry, tmp_path / "ws", Graph.from_data(data), "lr")
    assert set(failed) == {"lr"} and failed["lr"].param == "batch_size" and "(serve --max-batch)" in failed["lr"].message


def test_an_estimate_over_the_limits_says_so_per_node(registry, shapes, tmp_path):
    graph = with_params(classifier_graph(shapes, size=32, epochs=1), {"train.batch_size": 64})
    found = Executor(registry, tmp_path / "ws", device="cpu", limits=LIMITS).estimate(graph, "train")
    entry = found["nodes"]["train"]
    assert entry["status"] == "error" and "batch_size 64 is over this server's largest batch, 16 (serve --max-batch)" \
        in entry["error"]
    big = with_params(classifier_graph(shapes, size=32, epochs=1), {"fmt.height": 64, "input.height": 64})
    found = Executor(registry, tmp_path / "ws", device="cpu", limits=LIMITS).estimate(big, "train")
    assert "height 64 is over this server's largest image side (pixels), 48 (serve --max-image-side)" in \
        found["nodes"]["fmt"]["error"]
    assert found["nodes"]["train"]["status"] == "after upstream"


def test_without_limits_the_same_settings_run(registry, shapes, tmp_path):
    graph = with_params(classifier_graph(shapes, size=32, epochs=1), {"train.batch_size": 64, "fmt.resize_to": 256})
    report, failed = failed_run(registry, tmp_path / "ws", graph, "train", limits=None)
    assert report.ok and not failed
