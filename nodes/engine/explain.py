"""Why a trained model errs: every image of a split scored through the one data path (per-image
loss, predicted class, confidence), the misclassified ones sorted by loss, the images grouped by
confusion-matrix cell (true, predicted), and Grad-CAM heatmaps from the last convolutional block,
drawn over the images as PNG overlays. :class:`OverlayCache` keeps overlays on disk by (model,
file and its bytes, target class, block), so a confusion cell's gallery is drawn once and then only read.

Grad-CAM comes from captum (``LayerGradCam``), imported only when heatmaps are asked for.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nodes.engine.device import resolve_device
from nodes.engine.files import atomic_write_bytes
from nodes.engine.hooks import Hooks
from nodes.engine.images import IMAGENET_MEAN, IMAGENET_STD
from nodes.engine.inference import outputs
from nodes.engine.loop import network
from nodes.engine.pipeline import default_format, image_batches
from nodes.engine.values import ImageSet, ModelValue


@dataclass(frozen=True)
class Scored:
    """Every image of a split with its label, the model's class probabilities and its loss."""

    files: tuple[str, ...]
    labels: torch.Tensor  # N
    probs: torch.Tensor  # N×K
    losses: torch.Tensor  # N

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(1)

    @property
    def confidence(self) -> torch.Tensor:
        return self.probs.max(1).values


def score_images(model: ModelValue, data: ImageSet, split: str, batch_size: int, hooks: Hooks,
                 device_name: str = "auto", workers: int = 0) -> Scored:
    """Per-image probabilities and cross-entropy over a split, in the split's file order, through
    the same data path (decode cache, frozen-prefix feature cache) as training and evaluation."""
    device = resolve_device(device_name)
    net = device.prepare(network(model, len(model.classes))).eval()
    logits, labels = [], []
    for out, y in outputs(net, model, data, split, device, hooks, batch_size, workers):
        logits.append(out.cpu())
        labels.append(y.cpu().long())
    if not logits:
        k = len(model.classes)
        return Scored((), torch.empty(0, dtype=torch.long), torch.empty(0, k), torch.empty(0))
    logits_all, labels_all = torch.cat(logits), torch.cat(labels)
    losses = F.cross_entropy(logits_all, labels_all, reduction="none")
    return Scored(tuple(p for p, _ in data.split(split)), labels_all, logits_all.softmax(1), losses)


def error_rows(scored: Scored, classes: tuple[str, ...], top_n: int) -> list[dict[str, Any]]:
    """The misclassified images, highest loss first: file, true, predicted, confidence, loss."""
    wrong = (scored.predicted != scored.labels).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(scored.losses[i]))
    return [row(scored, classes, i) for i in wrong[:top_n]]


def row(scored: Scored, classes: tuple[str, ...], i: int) -> dict[str, Any]:
    return {"file": scored.files[i], "true": classes[int(scored.labels[i])],
            "predicted": classes[int(scored.predicted[i])], "confidence": round(float(scored.confidence[i]), 6),
            "loss": round(float(scored.losses[i]), 6)}


def confusion_cells(scored: Scored, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """The images of each non-empty confusion-matrix cell (true, predicted), highest loss first,
    so a gallery can show one cell's images: ``files``, and ``rows`` with each file's confidence
    (in the predicted class) and loss."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (t, p) in enumerate(zip(scored.labels.tolist(), scored.predicted.tolist())):
        cells.setdefault((t, p), []).append(i)
    result = []
    for (t, p), members in sorted(cells.items()):
        members.sort(key=lambda i: -float(scored.losses[i]))
        result.append({"true": classes[t], "predicted": classes[p], "count": len(members),
                       "files": [scored.files[i] for i in members],
                       "rows": [{"file": scored.files[i], "confidence": round(float(scored.confidence[i]), 6),
                                 "loss": round(float(scored.losses[i]), 6)} for i in members]})
    return result


# -- Grad-CAM -------------------------------------------------------------------------------------


def last_conv_block(net: nn.Sequential) -> str:
    """The name of the last top-level block that holds a convolution."""
    found = [name for name, block in net.named_children()
             if any(isinstance(m, nn.Conv2d) for m in block.modules())]
    if not found:
        raise ValueError("the model has no convolutional block to explain")
    return found[-1]


@dataclass(frozen=True)
class Heatmaps:
    """Grad-CAM maps (N×H×W, each scaled to [0, 1]) at input resolution, the images they explain
    as uint8 RGB (N×3×H×W, what the network saw before normalisation), and the block used."""

    maps: torch.Tensor
    images: torch.Tensor
    block: str


def grad_cam(model: ModelValue, files: list[str], targets: list[int], batch_size: int, hooks: Hooks,
             block: str = "", device_name: str = "auto") -> Heatmaps:
    """Grad-CAM of class ``targets[i]`` for image ``files[i]``, from ``block`` (default: the last
    convolutional block), upsampled bilinearly to the input size."""
    from captum.attr import LayerAttribution, LayerGradCam

    device = resolve_device(device_name)
    net = network(model, len(model.classes)).to(device.torch).eval()
    names = dict(net.named_children())
    block = block or last_conv_block(net)
    if block not in names:
        raise ValueError(f"the model has no block '{block}' (blocks: {', '.join(names)})")
    cam = LayerGradCam(net, names[block])
    fmt = default_format(model.format)
    data = ImageSet(classes=model.classes, splits={"explain": tuple(zip(files, targets))}, format=fmt)
    maps, images = [], []
    # a one-off list of files (the worst errors, a gallery page): read, not kept in the decode cache
    batches = image_batches(data, "explain", batch_size, False, device.torch, None, log=hooks.log,
                            should_stop=hooks.should_stop)
    done = 0
    for batch, labels in batches:
        hooks.check_stop()
        batch = batch.to(device.torch).float().requires_grad_(True)
        with torch.enable_grad():
            attribution = cam.attribute(batch, target=labels.to(device.torch).long(), relu_attributions=True)
        up = LayerAttribution.interpolate(attribution.detach(), tuple(batch.shape[-2:]), interpolate_mode="bilinear")
        up = up[:, 0].cpu()
        peak = up.flatten(1).max(1).values.clamp_min(1e-12)
        maps.append(up / peak[:, None, None])
        images.append(unnormalize(batch.detach().cpu(), fmt))
        done += len(batch)
        hooks.progress(done, len(files))
    if not maps:
        return Heatmaps(torch.empty(0, 0, 0), torch.empty(0, 3, 0, 0, dtype=torch.uint8), block)
    return Heatmaps(torch.cat(maps), torch.cat(images), block)


def unnormalize(batch: torch.Tensor, fmt: dict[str, Any]) -> torch.Tensor:
    """Network inputs back to uint8 RGB pixels."""
    if fmt.get("normalize") == "imagenet":
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if batch.shape[1] == 1:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        batch = batch * std[None, :, None, None] + mean[None, :, None, None]
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    return (batch.clamp(0, 1) * 255).round().to(torch.uint8)


def peak(heatmap: torch.Tensor) -> tuple[float, float]:
    """(row, column) of a heatmap's maximum: the centre of the pixels within 1% of it (an upsampled
    map is flat around its peak, where an argmax would pick the plateau's first corner)."""
    top = heatmap >= heatmap.max() * 0.99
    rows, cols = top.nonzero(as_tuple=True)
    return float(rows.float().mean()), float(cols.float().mean())


def overlay_scale(side: int) -> int:
    """How much to enlarge an overlay of a ``side``-pixel image so it is about 192 px wide."""
    return max(1, 192 // max(1, side))


class OverlayCache:
    """Grad-CAM overlay PNGs in ``folder``, one file per (model cache key, image file, its content,
    target class, block): the name holds a hash of the image's bytes, so an overlay is served only
    for the bytes it was drawn from, and an edited or swapped picture is drawn again. Drawing needs
    the model, which is loaded only when some overlay is missing."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, model_key: str, file: str, target: int, block: str) -> Path:
        try:
            content = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        except OSError:
            content = None
        digest = hashlib.sha256(json.dumps([model_key, file, content, int(target), block]).encode()).hexdigest()
        return self.folder / f"{digest}.png"

    def overlays(self, load_model: Callable[[], ModelValue], model_key: str, files: Sequence[str],
                 targets: Sequence[int], block: str, batch_size: int, hooks: Hooks,
                 device_name: str = "auto",
                 check: Callable[[Sequence[str]], None] = lambda files: None) -> tuple[list[Path], int]:
        """The overlay of class ``targets[i]`` over ``files[i]`` for each i, drawing only those not
        on disk yet; returns the paths and how many were drawn now. ``check`` refuses files that
        must not be read (raising); it is asked before any byte is read, and again after drawing,
        when a file whose bytes changed meanwhile is not written down under the old bytes' name."""
        check(files)
        paths = [self.path(model_key, f, t, block) for f, t in zip(files, targets)]
        missing = [i for i, path in enumerate(paths) if not path.is_file()]
        if not missing:
            return paths, 0
        maps = grad_cam(load_model(), [files[i] for i in missing], [int(targets[i]) for i in missing], batch_size,
                        hooks, block, device_name)
        check(files)
        changed = [files[i] for i in missing if self.path(model_key, files[i], targets[i], block) != paths[i]]
        if changed:
            raise RuntimeError(f"'{changed[0]}' changed while its overlay was drawn; open the cell again")
        scale = overlay_scale(maps.images.shape[-1])
        self.folder.mkdir(parents=True, exist_ok=True)
        for i, image, heat in zip(missing, maps.images, maps.maps):
            atomic_write_bytes(paths[i], overlay_png(image, heat, scale=scale))
        return paths, len(missing)


def overlay_png(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.45, scale: int = 1) -> bytes:
    """A PNG of ``image`` (uint8 3×H×W) with ``heatmap`` (H×W in [0, 1]) blended over it in a
    blue-to-red colour map; ``scale`` enlarges small images."""
    from PIL import Image

    h = heatmap.clamp(0, 1).numpy()
    colour = np.stack([np.clip(1.5 - np.abs(4 * h - 3), 0, 1),  # red
                       np.clip(1.5 - np.abs(4 * h - 2), 0, 1),  # green
                       np.clip(1.5 - np.abs(4 * h - 1), 0, 1)], axis=-1)  # blue
    pixels = image.permute(1, 2, 0).numpy().astype(np.float32) / 255
    blended = (1 - alpha) * pixels + alpha * colour
    picture = Image.fromarray((blended * 255).round().astype(np.uint8))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
