"""The cost preview's engine (``nodes.engine.estimate``) on a real tiny network and generated images:
a training split whose frozen-prefix outputs are cached costs far less per epoch than one that
must run the prefix first, the estimate follows what a real epoch takes, and estimating changes
neither the model's weights nor the workspace's caches."""

from __future__ import annotations

import time

import pytest
import torch

from nodes.engine.estimate import CPU_METHOD, estimate_fit, estimate_pass
from nodes.engine.fit import FitConfig, fit
from nodes.engine.hooks import Hooks
from nodes.engine.store import MEMORY
from nodes.engine.values import ModelValue
from tests.nodes.engine.conftest import image_set

SIZE = 64
FMT = {"height": SIZE, "width": SIZE, "channels": 3, "resize": "shorter_side", "crop": "center",
       "normalize": "imagenet"}
SPEC = {"input_shape": [3, SIZE, SIZE], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "vgg11", "weights": "none"},
    {"kind": "global_pool", "name": "pool", "mode": "avg"},
    {"kind": "dense", "name": "out", "units": "auto", "activation": "none", "dropout": 0.0}]}
BLOCKS = ("block1", "block2", "block3", "block4", "block5")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_set(tmp_path_factory.mktemp("estimate"), per_class=40, size=SIZE + 8, fmt=FMT)


def files(folder):
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.slow
def test_a_cached_prefix_makes_the_estimate_much_smaller_and_weights_stay(data, tmp_path):
    MEMORY.clear()
    torch.manual_seed(0)
    model = ModelValue(spec=SPEC, frozen=BLOCKS)
    config = FitConfig(epochs=3, batch_size=16, optimizer="adam", lr=1e-3, device="cpu")
    workspace = tmp_path / "ws"
    cold = estimate_fit(model, data, config, workspace)
    assert files(workspace) == []  # estimating wrote no cache entry
    assert cold.feature_cache == "built in the first epoch"
    assert cold.device == "cpu" and cold.epochs == 3 and cold.memory_method == CPU_METHOD
    assert cold.first_epoch_seconds > 3 * cold.epoch_seconds  # the first epoch runs the prefix over the split
    assert cold.seconds == pytest.approx(cold.first_epoch_seconds + 2 * cold.epoch_seconds)
    assert cold.peak_memory_bytes > sum(p.numel() * 4 for p in torch.nn.Linear(512, 2).parameters())

    # a real run builds the cache; the same training estimated again finds it
    trained = fit(model, data, config, Hooks(workspace=workspace))
    assert trained.feature_cache["enabled"]
    before = {k: v.clone() for k, v in trained.model.state.items()}
    again = trained.model.with_(state=trained.model.state)
    warm = estimate_fit(again, data, config, workspace)
    assert warm.feature_cache == "hit"
    # what an epoch costs without the cache: the prefix runs over the split every epoch
    off = estimate_fit(again, data, FitConfig(**{**config.record(), "block_lrs": (), "feature_cache": "off"}),
                       workspace)
    assert off.feature_cache.startswith("off")
    print(f"s/epoch: {off.epoch_seconds:.3f} without the feature cache, {warm.epoch_seconds:.3f} with a hit; first "
          f"epoch {cold.first_epoch_seconds:.3f} cold, {warm.first_epoch_seconds:.3f} warm (setup "
          f"{warm.setup_seconds:.3f})")
    assert warm.epoch_seconds < off.epoch_seconds / 5
    # the warm first epoch builds nothing: past its set-up it is priced as a later epoch, where the cold one
    # also prices running the prefix over the split (a sum of the same measurements, not two timings compared)
    assert warm.first_epoch_seconds - warm.setup_seconds == pytest.approx(warm.epoch_seconds)
    assert cold.first_epoch_seconds - cold.setup_seconds - cold.epoch_seconds > 0
    # the estimate leaves the model's weights as they were
    assert all(torch.equal(before[k], trained.model.state[k]) for k in before)


@pytest.mark.slow
def test_the_estimate_is_near_a_measured_epoch_without_cache(data, tmp_path):
    MEMORY.clear()
    torch.manual_seed(0)
    model = ModelValue(spec=SPEC, frozen=("block1", "block2"))
    config = FitConfig(epochs=2, batch_size=16, optimizer="sgd", lr=1e-2, device="cpu", feature_cache="off")
    workspace = tmp_path / "ws"
    guess = estimate_fit(model, data, config, workspace)
    assert guess.feature_cache.startswith("off")
    started = time.perf_counter()
    fit(model, data, config, Hooks(workspace=workspace))
    measured = time.perf_counter() - started
    print(f"estimated {guess.seconds:.2f} s, measured {measured:.2f} s")
    # a loose bound: the box is shared; the benchmark checks the ±30% target on the template
    assert guess.seconds / 3 < measured < guess.seconds * 3


def test_a_scoring_pass_counts_the_prefix_only_while_uncached(data, tmp_path):
    MEMORY.clear()
    torch.manual_seed(0)
    model = ModelValue(spec=SPEC, frozen=BLOCKS, classes=data.classes)
    found = estimate_pass(model, data, ["test", "validation"], 32, tmp_path / "ws", "cpu")
    assert found.seconds > 0 and found.epochs is None and found.feature_cache == "built in this pass"


@pytest.mark.slow
def test_dry_run_of_the_template_prints_the_estimate_and_trains_nothing(tmp_path, shapes, capsys):
    """``nodeflow run --dry-run`` called in this process (main prints and returns what the command would)."""
    from tests.clirun import nodeflow_here
    from tests.nodes.conftest import small_template

    graph = tmp_path / "graph.json"
    small_template(shapes).save(graph)
    workspace = tmp_path / "ws"
    done = nodeflow_here(capsys, ["--no-plugins", "run", graph, "--workspace", workspace, "--device", "cpu",
                                  "--dry-run", "--target", "train"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "estimate for train (nothing was run; cached nodes cost 0 s)"
    train = next(line for line in lines if line.startswith("train "))
    cells = train.split()
    assert cells[1:3] == ["stale", "cpu"] and "3" in cells and "feature cache: built in the first epoch" in train
    assert lines[-1].startswith("total: ≈ ")
    # nothing trained, cached, decoded or recorded
    assert files(workspace) == []


def test_the_lr_finder_and_the_trainer_estimate_and_name_a_model_with_nothing_to_train(data, tmp_path):
    from nodeflow.node import ParamProblem, RunContext
    from nodes.training import LRFinder, Trainer

    ctx = RunContext("lr", tmp_path / "ws", device="cpu")
    model = ModelValue(spec=SPEC, frozen=BLOCKS)
    found = LRFinder().estimate(ctx, LRFinder.Params(steps=5, batch_size=16), model=model, data=data)
    assert found["seconds"] > 0 and any("at most 5 steps" in note for note in found["notes"])

    frozen = ModelValue(spec=SPEC, frozen=(*BLOCKS, "pool", "out"))
    for node in (LRFinder(), Trainer()):
        with pytest.raises(ParamProblem) as caught:
            node.estimate(ctx, type(node).Params(), model=frozen, data=data)
        assert caught.value.port == "model" and "nothing to train" in str(caught.value)
