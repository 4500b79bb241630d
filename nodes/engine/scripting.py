"""The engine written as a script (what ``Node.script`` parts share, ``nodeflow export-script``): the
model and the images as the exported script sees them while they flow along the graph, the
image transforms of ``images.make_transform`` written as torchvision code, and the script's own
functions (``standalone``) by name.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
from dataclasses import dataclass, replace
from typing import Any

from nodes.engine.images import IMAGENET_MEAN, IMAGENET_STD

#: what the script's functions (``nodes.engine.standalone``) and the parts' code use
IMPORTS = ("import math", "import os", "import random", "from collections import OrderedDict", "import torch",
           "import torchvision", "from torch import nn", "from torch.utils.data import DataLoader",
           "from torchvision.transforms import v2", "from torchvision.datasets.folder import pil_loader")
#: why a model with a frozen start gives (slightly) other numbers here than in the graph's run
FEATURE_CACHE_NOTE = ("the graph's run computes the frozen blocks' outputs once and keeps them in fp16 (feature_cache "
                      "auto); this script runs those blocks on every batch in full precision, so losses differ in "
                      "about the third decimal")
DEVICE = ('device = torch.device("cuda" if torch.cuda.is_available()\n'
          '                      else "mps" if torch.backends.mps.is_available() else "cpu")')
#: how wide the script's lines may grow before a call's arguments wrap
WIDTH = 100


def functions(*names: str) -> tuple[str, ...]:
    """The source text of the script's functions ``names`` (see ``nodes.engine.standalone``), each
    after the constants it reads (``IMAGE_SUFFIXES = {...}``), which the script defines as well."""
    return tuple(dict.fromkeys(source for name in names for source in _sources(name)))


def call(head: str, args: list[str], indent: int = 4) -> str:
    """``head(arg, arg, ...)`` as code, its arguments wrapped under the parenthesis when the line
    (at ``indent`` in the script) would pass ``WIDTH``."""
    lines, line = [], f"{head}("
    for i, arg in enumerate(args):
        piece = arg + (", " if i < len(args) - 1 else ")")
        if indent + len(line) + len(piece.rstrip()) > WIDTH and line.strip() != f"{head}(":
            lines.append(line.rstrip())
            line = " " * (len(head) + 1)
        line += piece
    return "\n".join([*lines, line if args else f"{head}()"])


@functools.cache
def _sources(name: str) -> tuple[str, ...]:
    from nodes.engine import standalone  # torch's import waits until a script is written

    value = getattr(standalone, name)
    if not inspect.isfunction(value):
        return (inspect.getsource(value),)
    constants = [word for word in _names(value.__code__)
                 if isinstance(getattr(standalone, word, None), (str, int, float, tuple, dict, set, frozenset))]
    return (*(f"{word} = {_constant(getattr(standalone, word))}\n" for word in constants), inspect.getsource(value))


def _names(code: types.CodeType) -> list[str]:
    """The global names a function's code reads, its inner functions' too, in order."""
    found = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found += _names(const)
    return list(dict.fromkeys(found))


def _constant(value: Any) -> str:
    """A constant as script code, strings in double quotes, the same text in every process (a
    set's own order is not); a dict too long for one line gets a line per entry."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(_constant(item) for item in sorted(value)) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_constant(item) for item in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        entries = [f"{_constant(key)}: {_constant(item)}" for key, item in value.items()]
        one_line = "{" + ", ".join(entries) + "}"
        return one_line if len(one_line) <= WIDTH - 20 else "{\n" + "".join(f"    {e},\n" for e in entries) + "}"
    return repr(value)


@dataclass(frozen=True)
class ScriptModel:
    """A model while its layers are wired: ``layers``, the lines of its build function that add
    each layer's blocks (in order); ``width``, the expression of its current feature count when a
    constant says it (a dense layer's units), else None (the facts' number is written); and
    expressions (script code) for the names of its ``frozen`` blocks, whether batch norms stay
    frozen (``bn_frozen``) and the ``backbone``'s blocks. Once a trainer has trained it, ``build``
    names the function that builds it and ``trained`` the variable that holds it."""

    layers: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    width: str | None = None
    frozen: str = "[]"
    bn_frozen: str = "False"
    backbone: str = "[]"
    build: str | None = None
    trained: str | None = None

    def add(self, node_id: str, line: str, width: str | None = None, **changes: Any) -> ScriptModel:
        return replace(self, layers=(*self.layers, f"{line}  # {node_id}"), nodes=(*self.nodes, node_id),
                       width=width, **changes)


@dataclass(frozen=True)
class ScriptData:
    """Labelled images while they flow: expressions for the class names and the splits (split ->
    [(path, label)]); once formatted, the formatter's params (``format``) with the code of its sizes
    (``size``: height, width; ``resize_to``, or None); the training-time augmentations in order
    (code); and the variables holding the training and evaluation transforms."""

    classes: str
    splits: str
    format: dict[str, Any] | None = None
    size: tuple[str, str] = ("224", "224")
    resize_to: str | None = None
    augment: tuple[str, ...] = ()
    crop: str | None = None  # a random resized crop, which replaces the formatter's resize and crop
    erasing: str | None = None  # random erasing, which comes after normalisation
    train_transform: str | None = None
    eval_transform: str | None = None

    @property
    def reads_files_every_epoch(self) -> bool:
        """Whether the graph's trainer reads this set's training files every epoch, in worker
        processes it keeps between epochs (a random resized crop needs the whole image)."""
        return self.crop is not None


def transform(data: ScriptData, train: bool) -> str:
    """``v2.Compose([...])`` of ``make_transform`` (``nodes.engine.images``) for these params:
    resize and crop (or a random resized crop), the augmentations when ``train``, grayscale,
    scaling to [0, 1], ImageNet normalisation, random erasing."""
    fmt = data.format or {"resize": "shorter_side", "crop": "center", "channels": 3, "normalize": "imagenet"}
    height, width = data.size
    steps = ["v2.PILToTensor()"]
    if train and data.crop:
        steps.append(data.crop)
    elif fmt["resize"] == "stretch":
        steps.append(f"v2.Resize(({height}, {width}), antialias=True)")
    else:
        steps.append(f"v2.Resize({data.resize_to or f'max({height}, {width})'}, antialias=True)")
        crop = "RandomCrop" if train and fmt["crop"] == "random" else "CenterCrop"
        steps.append(f"v2.{crop}(({height}, {width}))")
    if train:
        steps += data.augment
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    if fmt["channels"] == 1:
        steps.append("v2.Grayscale(1)")
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    steps.append("v2.ToDtype(torch.float32, scale=True)")
    if fmt["normalize"] == "imagenet":
        steps.append(f"v2.Normalize({mean}, {std})")
    if train and data.erasing:
        steps.append(data.erasing)
    return "v2.Compose([\n" + "".join(f"    {step},\n" for step in steps) + "])"
