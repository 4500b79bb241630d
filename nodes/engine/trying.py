"""A trained model kept loaded to classify images one request at a time (the editor's Try it tab,
``POST /api/models/{node}/predict``, ``nodeflow predict``): each picture through the evaluation path's
pixels (decoded to RGB, resized and centre-cropped as the decode cache stores them, then normalised
as a batch), so a picture scores here as it scores in ``eval.predict``; and, when asked, the Grad-CAM
overlay of its top class from the last convolutional block, as the error galleries draw it.

Grad-CAM comes from captum, imported only when an overlay is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nodes.engine.device import resolve_device
from nodes.engine.loop import network
from nodes.engine.pipeline import default_format, geometry_for, network_input
from nodes.engine.values import ModelValue


@dataclass(frozen=True)
class Answer:
    """One picture's class probabilities (in the model's class order) and, when asked, the PNG of
    its top class's Grad-CAM overlay."""

    probabilities: tuple[float, ...]
    overlay: bytes | None = None


class Predictor:
    """A trained model's network, built once, on ``device_name``'s device, in evaluation mode."""

    def __init__(self, model: ModelValue, device_name: str = "cpu") -> None:
        if not model.classes:
            raise ValueError("the model has no classes: it was not trained on a labelled dataset")
        self.model = model
        self.classes = tuple(model.classes)
        self.device = resolve_device(device_name)
        self.net = network(model, len(model.classes)).to(self.device.torch).eval()
        self.format = default_format(model.format)
        self.geometry = geometry_for(self.format, train=False)
        self._cam: Any = None

    def pixels(self, picture: Any) -> torch.Tensor:
        """A PIL picture as the network's input (1×C×H×W): what the evaluation path makes of a file."""
        from torchvision.transforms.v2 import functional as F

        image = self.geometry.apply(F.pil_to_tensor(picture.convert("RGB")))
        return network_input(image.unsqueeze(0), self.format).to(self.device.torch)

    def predict(self, pictures: Sequence[Any], overlay: bool = False) -> list[Answer]:
        """Each picture's probabilities, and with ``overlay`` its top class's Grad-CAM PNG."""
        answers = []
        for picture in pictures:
            batch = self.pixels(picture)
            with torch.inference_mode(), self.device.autocast():
                probs = self.net(batch).float().softmax(1)[0].cpu()
            png = self.overlay(batch, int(probs.argmax())) if overlay else None
            answers.append(Answer(tuple(float(p) for p in probs), png))
        return answers

    def overlay(self, batch: torch.Tensor, target: int) -> bytes:
        """The Grad-CAM overlay PNG of class ``target`` over the picture the network saw."""
        from captum.attr import LayerAttribution, LayerGradCam

        from nodes.engine.explain import last_conv_block, overlay_png, overlay_scale, unnormalize

        if self._cam is None:
            names = dict(self.net.named_children())
            self._cam = LayerGradCam(self.net, names[last_conv_block(self.net)])
        inputs = batch.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            attribution = self._cam.attribute(inputs, target=target, relu_attributions=True)
        up = LayerAttribution.interpolate(attribution.detach(), tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        heat = up[0, 0].cpu()
        heat = heat / heat.max().clamp_min(1e-12)
        image = unnormalize(batch.detach().cpu(), self.format)[0]
        return overlay_png(image, heat, scale=overlay_scale(image.shape[-1]))

    def explainable(self) -> bool:
        """Whether the network has a convolutional block for Grad-CAM to explain."""
        from nodes.engine.explain import last_conv_block

        try:
            last_conv_block(self.net)
        except ValueError:
            return False
        return True
