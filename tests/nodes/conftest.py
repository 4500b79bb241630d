"""Shared image sets and helpers for the catalogue tests. Images are tiny so that the whole
folder trains real networks on two CPU cores in a few minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import Registry
from tests.imagegen import make_image_set
from tests.mirror import Mirror

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "cats_vs_dogs_finetune.json"

#: the template shrunk to 32×32 images with no downloads: what the end-to-end tests run
SMALL = {"dataset.root": None, "vgg16.weights": "none", "input.height": 32, "input.width": 32,
         "formatter.height": 32, "formatter.width": 32, "train.epochs": 3, "train.optimizer": "adam",
         "train.lr": 1e-3, "train.batch_size": 16, "train_finetuned.epochs": 3, "train_finetuned.optimizer": "adam",
         "train_finetuned.lr": 1e-4, "train_finetuned.batch_size": 16}


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.discover(plugins=False)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    """Circles vs stripes in train/validation/test folders, sizes varying around 36 px."""
    return make_image_set(tmp_path_factory.mktemp("shapes"), ("circle", "stripes"), per_class=50, size=36,
                          vary_size=True, class_names=("cat", "dog"))


@pytest.fixture
def mirror():
    """A download host on loopback; tests put files on it and may make it stall or cut answers."""
    server = Mirror()
    yield server
    server.close()


def with_params(graph: Graph, values: dict) -> Graph:
    data = graph.model_dump(mode="json")
    nodes = {n["id"]: n for n in data["nodes"]}
    for key, value in values.items():
        node_id, param = key.split(".", 1)
        nodes[node_id]["params"][param] = value
    return Graph.from_data(data)


def small_template(root: Path, **overrides) -> Graph:
    values = {**SMALL, "dataset.root": str(root)}
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return with_params(Graph.load(TEMPLATE), values)


def run(registry: Registry, graph: Graph, workspace: Path, **kwargs):
    return Executor(registry, workspace, device="cpu").run(graph, **kwargs)
