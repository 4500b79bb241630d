"""Backbone weights files as people have them, for every architecture the backbone node offers.

Parity: a file saved the torchvision way (``torch.save(model.state_dict())`` or safetensors)
gives nodeflow's backbone blocks the very features torchvision's own model computes from the
same file. The files come from a seeded random init in which every constant-initialised tensor
(batch-norm statistics, norms, layer scales, biases) is perturbed, so a tensor that did not load
changes the features. The same file re-saved under nodeflow's names (as the export node writes
them) loads too; checkpoints and DDP prefixes unwrap; files for another architecture are refused
with what was recognised, expected and found."""

from __future__ import annotations

from collections import OrderedDict
import shutil

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from nodes.engine.models import (ARCHS, WeightsMismatch, backbone_blocks, build, load_backbone_state, split_blocks,
                                 torchvision_model)

SIZE = 32
#: a VGG file is over 500 MB (its classifier) and takes most of the time: these run with the slow tests
SLOW = {"vgg11", "vgg19", "vgg16_bn"}


def seeded_torchvision(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None).eval()
    with torch.no_grad():
        for tensor in model.state_dict(keep_vars=True).values():
            if tensor.is_floating_point() and tensor.numel() and bool((tensor == tensor.flatten()[0]).all()):
                tensor.copy_(tensor * torch.empty_like(tensor).uniform_(0.5, 1.5) + 0.05 * torch.randn_like(tensor))
                tensor.abs_()  # keeps running variances positive; harmless for the rest
    return model


def save(state: dict[str, torch.Tensor], path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def torchvision_load(path) -> dict[str, torch.Tensor]:
    """How a torchvision user reads the file back (not nodeflow's reader)."""
    return load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


def backbone(arch: str, weights_file) -> nn.Sequential:
    """nodeflow's blocks as the trainer builds them from a spec with this weights file."""
    spec = {"input_shape": [3, SIZE, SIZE],
            "layers": [{"kind": "backbone", "name": "backbone", "arch": arch, "weights_file": str(weights_file)}]}
    return build(spec).eval()


def their_features(arch: str, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    last = "layer4" if arch.startswith("resnet") else "features"
    with torch.no_grad():
        return create_feature_extractor(model, {last: "out"})(images)["out"]


def blank(arch: str) -> nn.Module:
    """A torchvision model of the architecture with no values of its own: built without its random
    init (most of a VGG's cost) and filled with NaN, so a tensor that does not load shows."""
    with torch.device("meta"):
        model = torchvision.models.get_model(arch, weights=None)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for tensor in model.state_dict(keep_vars=True).values():
            tensor.fill_(float("nan") if tensor.is_floating_point() else -1)
    return model


@pytest.fixture(scope="module", params=[pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in ARCHS])
def seeded(request):
    """One seeded model per architecture, shared by every test of it (a VGG's init takes seconds)."""
    return request.param, seeded_torchvision(request.param)


@pytest.fixture(scope="module")
def torchvision_files(seeded, tmp_path_factory):
    """The seeded model saved both ways, and a second torchvision model to load the files into
    (shared by the two formats' tests). The files go once the architecture's tests are done: a VGG's
    two files take 1.1 GB, and the suite should not hold every architecture's at once."""
    arch, model = seeded
    folder = tmp_path_factory.mktemp(arch)
    state = model.state_dict()
    files = {suffix: save(state, folder / f"{arch}{suffix}") for suffix in (".pth", ".safetensors")}
    yield arch, files, blank(arch)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_torchvision_file_gives_torchvisions_features(torchvision_files, suffix, tmp_path):
    arch, files, reference = torchvision_files
    reference.load_state_dict(torchvision_load(files[suffix]))  # strict: every tensor of the file
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    expected = their_features(arch, reference, images)
    assert expected.abs().max() > 0 and torch.isfinite(expected).all()
    ours = backbone(arch, files[suffix])
    with torch.no_grad():
        torch.testing.assert_close(ours(images), expected, rtol=0, atol=1e-5)
    if suffix == ".safetensors":  # the same tensors under nodeflow's names, as the export node writes them
        exported = save(ours.state_dict(), tmp_path / "exported.safetensors")
        with torch.no_grad():
            torch.testing.assert_close(backbone(arch, exported)(images), expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def resnet18():
    return seeded_torchvision("resnet18")


def loaded(arch: str, path) -> dict[str, torch.Tensor]:
    return nn.Sequential(OrderedDict(backbone_blocks({"arch": arch, "weights_file": str(path)}))).state_dict()


@pytest.mark.parametrize("wrap", [
    lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},  # DDP, in a checkpoint
    lambda s: {"model": s, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3},  # torchvision's references
    lambda s: {f"model.{k}": v for k, v in s.items()},  # a model kept as self.model (Lightning)
    lambda s: {"state_dict": {f"model.module.{k}": v for k, v in s.items()}},
], ids=["ddp-checkpoint", "references-checkpoint", "model-prefix", "both-prefixes"])
def test_checkpoints_and_wrapper_prefixes_unwrap(resnet18, wrap, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(wrap(resnet18.state_dict()), path)
    stem = loaded("resnet18", path)
    assert torch.equal(stem["stem.conv1.weight"], resnet18.conv1.weight)
    assert torch.equal(stem["layer4.1.bn2.running_var"], resnet18.layer4[1].bn2.running_var)


def refusal(arch: str, path) -> str:
    with pytest.raises(WeightsMismatch) as caught:
        backbone_blocks({"arch": arch, "weights_file": str(path)})
    return str(caught.value)


def test_a_file_for_another_architecture_is_refused_naming_the_one_it_fits(resnet18, tmp_path):
    resnet34 = save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    message = refusal("resnet18", resnet34)
    assert "does not fit resnet18: read with torchvision's key names" in message
    assert "96 tensors are not resnet18's (layer1.2.conv1.weight" in message
    assert "resnet18 expects keys such as conv1.weight" in message and "the file has conv1.weight" in message
    assert "It fits resnet34 (torchvision's key names)" in message

    mobilenet = save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "mobile.pth")
    message = refusal("resnet18", mobilenet)
    assert "neither torchvision's for it (conv1.weight" in message and "nor nodeflow's (stem.conv1.weight" in message
    assert "the file has features.0.0.weight" in message and "It fits mobilenet_v3_small" in message

    resnet50 = save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.safetensors")
    message = refusal("resnet34", resnet50)
    assert "tensors have another shape (layer1.0.conv1.weight 64×64×1×1 for 64×64×3×3" in message


def test_a_partial_file_is_refused_naming_what_is_missing(resnet18, tmp_path):
    state = resnet18.state_dict()
    del state["conv1.weight"]
    message = refusal("resnet18", save(state, tmp_path / "partial.pth"))
    assert "read with torchvision's key names, 1 of the 100 backbone tensors are missing (conv1.weight)" in message
    assert "It fits" not in message
    ours = {f"stem.{k}" if k.startswith(("conv1", "bn1")) else k: v for k, v in resnet18.state_dict().items()}
    del ours["layer4.1.conv2.weight"]
    message = refusal("resnet18", save(ours, tmp_path / "ours.pth"))
    assert "read with nodeflow's key names, 1 of the 100 backbone tensors are missing (layer4.1.conv2.weight)" in message


@pytest.fixture(scope="module")
def resnet18_layout():
    model = torchvision_model("resnet18")
    blocks = split_blocks("resnet18", model)
    net = nn.Sequential(OrderedDict(blocks))
    return model, blocks, {k: v.clone() for k, v in net.state_dict().items()}


KEY_PARTS = st.sampled_from(["conv1", "bn1", "stem", "layer1", "layer4", "0", "1", "downsample", "weight", "bias",
                             "running_mean", "fc", "features", "module", "model", "block1"])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.lists(KEY_PARTS, min_size=1, max_size=5).map(".".join),
                       st.lists(st.integers(1, 4), max_size=3), max_size=12),
       st.booleans())
def test_any_state_dict_loads_only_when_it_fits_and_a_refusal_changes_nothing(resnet18_layout, resnet18, keys,
                                                                              with_real):
    """Keys made of the words real files use, with any small shapes, on top of (or without) a real
    file: either every backbone tensor loads, or WeightsMismatch says so and the blocks are as
    they were."""
    model, blocks, before = resnet18_layout
    state = {k: torch.zeros(shape) for k, shape in keys.items()}
    if with_real:
        state = {**resnet18.state_dict(), **state}
    net = nn.Sequential(OrderedDict(blocks))
    try:
        load_backbone_state("resnet18", model, blocks, state, "any.pth")
    except WeightsMismatch as exc:
        assert str(exc).startswith("weights file 'any.pth' does not fit resnet18: ")
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    else:
        assert with_real
        assert torch.equal(net.stem.conv1.weight, state.get("conv1.weight", state.get("stem.conv1.weight")))
        net.load_state_dict(before)


def test_the_exported_scripts_loader_loads_what_the_graph_loads(seeded, tmp_path):
    """``standalone.backbone`` (the script's) against the graph's loader, from one file per naming:
    torchvision's with its classifier cut to 4 classes (as a fine-tuned model is saved), and the
    blocks' names with a head of their own. Both load every tensor of the blocks, and the same."""
    from nodes.engine import standalone

    arch, model = seeded
    blocks = nn.Sequential(OrderedDict(split_blocks(arch, model)))
    kept = {id(t) for t in blocks.state_dict(keep_vars=True).values()}
    head = {k: t[:4].clone() if t.dim() else t for k, t in model.state_dict(keep_vars=True).items()
            if id(t) not in kept}
    assert head, "a classifier to cut"
    theirs = save({k: t for k, t in model.state_dict().items() if k not in head} | head, tmp_path / "theirs.pth")
    ours = save(blocks.state_dict() | {f"head.{k}": t for k, t in head.items()}, tmp_path / "ours.pth")
    for path, into in ((theirs, None), (ours, blank(arch))):  # a new network as the script makes one, or a given one
        script = nn.Sequential(OrderedDict(split_blocks(arch, standalone.backbone(arch, str(path), into)))).state_dict()
        graph = loaded(arch, path)
        assert script.keys() == graph.keys() == blocks.state_dict().keys()
        for key, tensor in blocks.state_dict().items():
            assert torch.equal(script[key], tensor) and torch.equal(graph[key], tensor), (path.name, key)
    with pytest.raises(ValueError, match=f"does not hold {arch}'s feature blocks: .* is missing"):
        standalone.backbone(arch, str(save(dict(list(blocks.state_dict().items())[1:]), tmp_path / "part.pth")),
                            blank(arch))
