"""Build networks from architecture specs, infer their shapes, load backbone weights.

A spec is JSON: ``{"input_shape": [c, h, w], "layers": [...]}``. Each layer becomes one or more
named top-level blocks of an ``nn.Sequential`` (``block1..block5`` for VGG, ``stem, layer1..4``
for ResNet, then the head layers by name), so fine-tuning can pick blocks by name and the
frozen prefix of a model is simply its first blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import sys
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes.engine.download import MIRROR_ENV, DownloadError, download, file_name, source_url

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported by the functions that build or load a network, not here: the catalogue (the
# backbone node's choices, checking a graph whose summaries are kept) is read without it, which
# saves every command and the editor's start the seconds torch's import takes

#: Architectures the backbone node offers; all come from torchvision without their classifier.
ARCHS = ("vgg11", "vgg16", "vgg19", "vgg16_bn", "resnet18", "resnet34", "resnet50", "resnet101",
         "efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny")

#: each activation a dense layer offers -> the name of its ``torch.nn`` module
ACTIVATIONS = {"none": "Identity", "relu": "ReLU", "gelu": "GELU", "silu": "SiLU", "tanh": "Tanh",
               "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU"}


class SpecError(ValueError):
    """A spec that cannot be built; ``layer`` is the name of the offending layer."""

    def __init__(self, message: str, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer


# -- backbones ------------------------------------------------------------------------------------


def torchvision_model(arch: str) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(arch, weights=None)


def split_blocks(arch: str, model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Cut a torchvision classifier into its named feature blocks (classifier dropped), with the
    functions the exported script cuts it with, so both name the blocks alike."""
    from nodes.engine import standalone

    if arch.startswith("vgg"):
        return list(standalone.vgg_blocks(model).items())
    if arch.startswith("resnet"):
        return list(standalone.resnet_blocks(model).items())
    if hasattr(model, "features"):
        return list(standalone.feature_blocks(model).items())
    raise SpecError(f"don't know how to split '{arch}' into blocks")


def backbone_blocks(layer: dict[str, Any], load_weights: bool = True) -> list[tuple[str, nn.Module]]:
    arch = layer["arch"]
    model = torchvision_model(arch)
    blocks = split_blocks(arch, model)
    weights_file = layer.get("weights_file")
    if weights_file and load_weights:
        load_backbone_state(arch, model, blocks, read_state_dict(Path(weights_file)), weights_file)
    return blocks


#: what wraps a model's keys when it was saved from inside another module (DDP, a Lightning module)
WRAPPER_PREFIXES = ("module.", "model.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file loaded with weights_only=True: a plain
    state dict or a checkpoint holding one under 'state_dict' or 'model'; the 'module.' and
    'model.' prefixes of a model saved from inside a wrapper are dropped."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            data = load_file(str(path))
        except SafetensorError as exc:
            raise ValueError(f"'{path}' is not a weights file: its name ends in .safetensors but it is not one "
                             f"({_short(exc)})") from None
    else:
        data = _torch_load(path)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in data.items()):
        raise ValueError(f"'{path}' does not hold a state dict (a mapping of names to tensors)")
    return {_unwrapped(key): tensor for key, tensor in data.items()}


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with open(path, "rb") as handle:
            pickled = handle.read(1) == b"\x80"  # a pickle's protocol mark; torch.save's own format is a zip
        if not (pickled or zipfile.is_zipfile(path)):
            raise ValueError(f"'{path}' is not a weights file: neither .safetensors nor a torch.save file "
                             f"({first[:120]})") from None
        raise ValueError(f"refused to load '{path}': it needs to run pickled code to load ({first[:200]}); "
                         "nodeflow loads only plain tensors. Save the weights with "
                         "torch.save(model.state_dict(), ...) or as .safetensors") from None


def _unwrapped(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


class WeightsMismatch(ValueError):
    """A weights file whose tensors are not the backbone's: another architecture, or a partial file."""


def key_namings(model: nn.Module, blocks: list[tuple[str, nn.Module]]) -> dict[str, dict[str, str]]:
    """For each naming a file may use, its name of every backbone tensor -> ours. torchvision's names
    are read off the torchvision model the blocks were cut from (the same tensor objects), so they
    hold for every architecture without a table; ours are the block names the export node writes."""
    from torch import nn

    ours = nn.Sequential(OrderedDict(blocks)).state_dict(keep_vars=True)
    by_tensor = {id(tensor): key for key, tensor in ours.items()}
    torchvision = {key: by_tensor[id(tensor)] for key, tensor in model.state_dict(keep_vars=True).items()
                   if id(tensor) in by_tensor}
    return {"torchvision's": torchvision, "nodeflow's": {key: key for key in ours}}


#: a backbone's key names in each naming (file key -> ours) and the shape of each of our tensors
Layout = tuple[dict[str, dict[str, str]], dict[str, tuple[int, ...]]]


def _layout(model: nn.Module, blocks: list[tuple[str, nn.Module]]) -> Layout:
    from torch import nn

    shapes = {key: tuple(t.shape) for key, t in nn.Sequential(OrderedDict(blocks)).state_dict().items()}
    return key_namings(model, blocks), shapes


@lru_cache(maxsize=None)
def _arch_layout(arch: str) -> Layout:
    import torch

    with torch.device("meta"):  # only names and shapes are needed: no memory, no init
        model = torchvision_model(arch)
        return _layout(model, split_blocks(arch, model))


def _optional(key: str) -> bool:
    return key.endswith("num_batches_tracked")  # a counter that older files (and BN loading) do without


def _match(layout: Layout, state: dict[str, torch.Tensor]) -> tuple[str, dict[str, list[str]]]:
    """The naming that covers most of the file's keys (torchvision's on a tie: ResNet's layer1..4 are
    named alike in both, only the stem tells them apart), and what in the file does not fit."""
    namings, shapes = layout
    naming, names = max(namings.items(), key=lambda item: len(state.keys() & item[1].keys()))
    roots = {key.split(".", 1)[0] for key in names}  # a key under these belongs to the backbone; others are a head
    problems = {
        "missing": [k for k in names if k not in state and not _optional(k)],
        "unknown": [k for k in state if k not in names and k.split(".", 1)[0] in roots],
        "shape": [f"{k} {_dims(tuple(state[k].shape))} for {_dims(shapes[names[k]])}" for k in state
                  if k in names and tuple(state[k].shape) != shapes[names[k]]],
    }
    return naming, {kind: found for kind, found in problems.items() if found}


def load_backbone_state(arch: str, model: nn.Module, blocks: list[tuple[str, nn.Module]],
                        state: dict[str, torch.Tensor], source: str) -> None:
    """Load a file with torchvision's key names (``conv1.weight``, ``features.0.weight``, as its
    published files and ``torch.save(model.state_dict())`` have them) or ours (``stem.conv1.weight``,
    ``block1.0.weight``, as the export node writes them) into the blocks; head weights are ignored.
    Refuses, naming the naming it recognised and keys expected and found, unless every backbone
    tensor is there with its shape; the blocks are untouched then."""
    from nodes.engine import standalone

    layout = _layout(model, blocks)
    naming, problems = _match(layout, state)
    if problems:
        raise WeightsMismatch(_mismatch_message(arch, source, naming, layout[0], problems, state))
    standalone.backbone(arch, state, model)  # the exported script's loader: what the graph loads, it loads


def _mismatch_message(arch: str, source: str, naming: str, namings: dict[str, dict[str, str]],
                      problems: dict[str, list[str]], state: dict[str, torch.Tensor]) -> str:
    expected = {name: [k for k in keys if not _optional(k)] for name, keys in namings.items()}
    if not state.keys() & namings[naming].keys():
        theirs, ours = (_few(expected[name]) for name in ("torchvision's", "nodeflow's"))
        read = f"its key names are neither torchvision's for it ({theirs}) nor nodeflow's ({ours})"
    else:
        told = {"missing": f"{{n}} of the {len(expected[naming])} backbone tensors are missing ({{few}})",
                "unknown": f"{{n}} tensors are not {arch}'s ({{few}})",
                "shape": "{n} tensors have another shape ({few})"}
        read = f"read with {naming} key names, " + "; ".join(
            told[kind].format(n=len(found), few=_few(found)) for kind, found in problems.items())
        read += f". {arch} expects keys such as {_few(expected[naming])}"
    has = f"the file has {_few(list(state))}" if state else "the file holds no tensors"
    message = f"weights file '{source}' does not fit {arch}: {read}; {has}"
    others = [f"{other} ({fits} key names)" for other in ARCHS if other != arch
              for fits, trouble in [_match(_arch_layout(other), state)] if not trouble]
    if others:
        message += f". It fits {', '.join(others)}: set arch to match the file"
    return message


def imagenet_url(arch: str) -> str:
    """Where torchvision downloads the ImageNet weights of ``arch`` from."""
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT.url


def hub_checkpoints() -> Path:
    """torch's own cache of downloaded weights (``$TORCH_HOME/hub/checkpoints``): torch's answer once
    torch is imported (a program may have moved it with ``torch.hub.set_dir``), else the same
    default torch.hub.get_dir gives, read from the environment without importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir()) / "checkpoints"
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


#: the file name of each arch's ImageNet weights as torchvision publishes them, under IMAGENET_DOWNLOADS
#: (tests check both against torchvision's own table): whether they are here, and where they come
#: from, is then known without importing torchvision
IMAGENET_DOWNLOADS = "https://download.pytorch.org/models/"
IMAGENET_FILES = {
    "vgg11": "vgg11-8a719046.pth", "vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth", "resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-11ad3fa6.pth", "resnet101": "resnet101-cd907fc2.pth",
    "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
    "mobilenet_v3_large": "mobilenet_v3_large-5c1a4163.pth", "convnext_tiny": "convnext_tiny-983f1562.pth"}


def kept_imagenet_url(arch: str) -> str:
    """:func:`imagenet_url` as the tables kept here give it (the same for the archs offered), so
    checking a graph tells where its weights come from without importing torchvision."""
    return IMAGENET_DOWNLOADS + IMAGENET_FILES[arch] if arch in IMAGENET_FILES else imagenet_url(arch)


def cached_imagenet_weights(arch: str, folder: Path | None) -> Path | None:
    """The ImageNet weights file of ``arch`` if it is already here: in ``folder`` (the workspace's
    weights folder) or in torch's hub cache."""
    filename = IMAGENET_FILES.get(arch) or imagenet_url(arch).rsplit("/", 1)[-1]
    places = [hub_checkpoints() / filename]
    if folder is not None:
        places.insert(0, Path(folder) / filename)
    return next((place for place in places if place.is_file()), None)


_REACHED: dict[str, tuple[float, bool]] = {}
_REACHED_LOCK = threading.Lock()


def can_reach(url: str, timeout: float = 1.5, remember: float = 300.0) -> bool:
    """Whether a connection to ``url``'s host opens within ``timeout`` seconds (name lookup
    included, which the socket timeout does not bound); the answer is kept ``remember`` seconds, as
    validation asks on every check."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    with _REACHED_LOCK:
        known = _REACHED.get(host)
        if known is not None and time.monotonic() - known[0] < remember:
            return known[1]
    answer: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    reached = bool(answer and answer[0])
    with _REACHED_LOCK:
        _REACHED[host] = (time.monotonic(), reached)
    return reached


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) or "scalar"


#: the weights files the backbone node reads, as its messages and help say
WEIGHTS_FILES = ("a .pth or .pt file written by torch.save (a state dict, or a checkpoint holding one under "
                 "'state_dict' or 'model'; 'module.' and 'model.' prefixes are dropped) or a .safetensors file, "
                 "with torchvision's key names (its published files, torch.save(model.state_dict())) or "
                 "nodeflow's (as the export node writes them)")


def imagenet_weights(arch: str, folder: Path, timeout: float = 15.0,
                     progress: Callable[[int, int], None] | None = None) -> Path:
    """torchvision's ImageNet weights file of ``arch``: already in ``folder`` or torch's hub cache,
    else downloaded into ``folder`` (from ``NODEFLOW_MIRROR_URL`` when set) and kept only once its
    SHA-256 begins with the hash in torchvision's file name. Fails fast with what to do offline."""
    url = imagenet_url(arch)
    filename = file_name(url)
    cached = cached_imagenet_weights(arch, folder)
    if cached is not None:
        return cached
    import torch

    published = torch.hub.HASH_REGEX.search(filename)
    try:
        source = source_url(url)
        return download(source, folder / filename, "sha256", published.group(1) if published else "", timeout,
                        progress)
    except DownloadError as exc:
        raise WeightsUnavailable(
            f"could not download the ImageNet weights of {arch}: {exc}. To work offline, put torchvision's file "
            f"'{filename}' into '{folder}' (or '{hub_checkpoints()}'); or set {MIRROR_ENV} to the base URL of a server that "
            f"holds it (nodeflow then fetches <that URL>/{filename} and checks its SHA-256); or set weights to "
            f"'none' or to the path of a weights file: {WEIGHTS_FILES}") from None


class WeightsUnavailable(RuntimeError):
    pass


# -- layers ---------------------------------------------------------------------------------------


def layer_blocks(layer: dict[str, Any], in_shape: list[int], num_classes: int | None,
                 load_weights: bool) -> list[tuple[str, nn.Module]]:
    from torch import nn

    kind = layer["kind"]
    name = layer["name"]
    if kind == "backbone":
        if in_shape[0] != 3:
            raise SpecError(f"{layer['arch']} takes 3-channel images but the input has {in_shape[0]} channels; "
                            f"set the input layer's and formatter's channels to 3", name)
        return backbone_blocks(layer, load_weights)
    if kind == "flatten":
        return [(name, nn.Flatten())]
    if kind == "global_pool":
        _need_image(in_shape, name)
        pool = nn.AdaptiveAvgPool2d(1) if layer.get("mode", "avg") == "avg" else nn.AdaptiveMaxPool2d(1)
        return [(name, nn.Sequential(pool, nn.Flatten()))]
    if kind == "dense":
        if len(in_shape) != 1:
            raise SpecError(f"a dense layer needs a flat input but gets shape {in_shape}; "
                            f"put a flatten or global average pool node before '{name}'", name)
        units = layer["units"]
        if units == "auto":
            if num_classes is None:
                raise SpecError(f"'{name}' has units 'auto', which needs the dataset's classes", name)
            units = num_classes
        linear = nn.Linear(in_shape[0], int(units))
        init_linear(linear, layer.get("init", "default"))
        parts = [linear, getattr(nn, ACTIVATIONS[layer.get("activation", "none")])()]
        if layer.get("dropout", 0):
            parts.append(nn.Dropout(layer["dropout"]))
        return [(name, nn.Sequential(*parts))]
    if kind == "batchnorm":
        norm = nn.BatchNorm1d(in_shape[0]) if len(in_shape) == 1 else nn.BatchNorm2d(in_shape[0])
        return [(name, norm)]
    if kind == "dropout":
        return [(name, nn.Dropout(layer["p"]))]
    raise SpecError(f"unknown layer kind '{kind}'", name)


INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_normal")


def init_linear(linear: nn.Linear, init: str) -> None:
    """Re-initialise a new layer's weights (bias to zero); 'default' keeps torch's own init.
    Xavier suits a new output layer fed by pooled features (the ResNet-18 hot-dog recipe)."""
    from torch import nn

    if init == "default":
        return
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(linear.weight)
    elif init == "xavier_normal":
        nn.init.xavier_normal_(linear.weight)
    elif init == "kaiming_normal":
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    else:
        raise SpecError(f"unknown init '{init}' (choose from {', '.join(INITS)})")
    nn.init.zeros_(linear.bias)


def _need_image(shape: list[int], name: str) -> None:
    if len(shape) != 3:
        raise SpecError(f"'{name}' pools feature maps (C×H×W) but gets shape {shape}", name)


def resolve_spec(spec: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The spec with dense units 'auto' replaced by the number of classes."""
    layers = [{**layer, "units": num_classes} if layer.get("units") == "auto" else layer for layer in spec["layers"]]
    return {**spec, "layers": layers}


def build(spec: dict[str, Any], num_classes: int | None = None, load_weights: bool = True) -> nn.Sequential:
    """The network of a spec, freshly initialised from the global torch seed (plus any backbone
    weights file). ``num_classes`` resolves dense layers with units 'auto'."""
    from torch import nn

    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for layer, shape in zip(spec["layers"], summarize(spec)["layer_inputs"]):
        blocks.update(layer_blocks(layer, shape, num_classes, load_weights))
    return nn.Sequential(blocks)


def _out_shape(module: nn.Module, shape: list[int], name: str) -> list[int]:
    """Propagate a shape through a meta-device module, with the batch size 2 that batch-norm
    needs in training mode."""
    import torch

    try:
        out = module(torch.empty(2, *shape, device="meta"))
    except RuntimeError as exc:
        raise SpecError(f"'{name}' cannot take input of shape {shape}: {_short(exc)}", name) from None
    if any(d == 0 for d in out.shape):
        raise SpecError(f"input of shape {shape} is too small for '{name}' (output {list(out.shape[1:])})", name)
    return list(out.shape[1:])


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200]


#: what a backbone layer holds that its shapes and parameter counts do not depend on (a summary loads no weights)
NOT_SUMMARISED = ("weights", "weights_file")


def summarize(spec: dict[str, Any]) -> dict[str, Any]:
    """Output shape and per-block parameter counts of a spec, computed on the meta device. A spec
    with a backbone is also kept on disk (see :func:`_kept_summary`), under its layers without their
    weights: pointing a backbone at another weights file needs no new summary, so no torch."""
    layers = [{key: value for key, value in layer.items() if key not in NOT_SUMMARISED}
              if layer.get("kind") == "backbone" else layer for layer in spec["layers"]]
    return json.loads(_kept_summary(json.dumps({**spec, "layers": layers}, sort_keys=True)))


@lru_cache(maxsize=256)
def _kept_summary(spec_json: str) -> str:
    """:func:`_summary`, kept in the user's cache folder per spec and torch/torchvision version when
    the spec has a backbone: checking a graph then needs no torchvision, whose import (torch._dynamo
    with it) is most of the seconds a run spends before its first node."""
    if '"kind": "backbone"' not in spec_json:
        return _summary(spec_json)
    from importlib.metadata import PackageNotFoundError, version

    from nodes.engine.files import atomic_write_text

    try:
        versions = f"torch {version('torch')}, torchvision {version('torchvision')}"
    except PackageNotFoundError:
        return _summary(spec_json)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nodeflow" / "summaries"
    path = cache / (hashlib.sha256(f"{versions}\n{spec_json}".encode()).hexdigest()[:40] + ".json")
    try:
        return path.read_text()
    except OSError:
        pass
    found = _summary(spec_json)
    try:
        atomic_write_text(path, found)
    except OSError:
        pass  # a read-only home: computed again next time
    return found


@lru_cache(maxsize=256)
def _summary(spec_json: str) -> str:
    spec = json.loads(spec_json)
    blocks: list[dict[str, Any]] = []
    inputs: list[list[Any]] = []
    shape: list[Any] = list(spec["input_shape"])
    if not spec["layers"]:  # an input layer alone (what every graph starts with) needs no torch
        return json.dumps({"blocks": blocks, "output_shape": shape, "layer_inputs": inputs})
    import torch
    from torch import nn

    with torch.device("meta"):
        for layer in spec["layers"]:
            inputs.append(shape)
            if shape and shape[0] == "auto":
                raise SpecError(f"'{layer['name']}' follows a layer with units 'auto'; only the last layer "
                                f"may take its size from the dataset", layer["name"])
            auto = layer["kind"] == "dense" and layer["units"] == "auto"
            new = layer_blocks(layer, shape, 2 if auto else None, load_weights=False)
            for name, module in new:
                if any(b["name"] == name for b in blocks):
                    raise SpecError(f"two layers are named '{name}'; give one of them another name", layer["name"])
                count = sum(p.numel() for p in module.parameters())
                blocks.append({"name": name, "layer": layer["name"], "kind": layer["kind"],
                               "params": None if auto else count})
            shape = _out_shape(nn.Sequential(OrderedDict(new)), shape, layer["name"])
            if auto:
                shape = ["auto"]
    return json.dumps({"blocks": blocks, "output_shape": shape, "layer_inputs": inputs})
