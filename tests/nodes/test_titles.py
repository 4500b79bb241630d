"""The backbone's card title follows its architecture and weights: the templates' cards show it,
and a project made when the templates typed those words follows too, since they are the same."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodeflow.graph import Graph
from nodeflow.node import auto_title, card_title
from nodeflow.templates import template_path
from nodes.engine.models import ARCHS
from nodes.model import ARCH_NAMES, Backbone

ENTRY = Backbone.describe()


def titles(registry, name: str) -> dict[str, str]:
    graph = Graph.load(template_path(name))
    return {n.id: card_title(registry.get(n.type), n.title, n.params) for n in graph.nodes}


def test_the_templates_backbones_are_titled_by_their_params(registry):
    assert titles(registry, "cats_vs_dogs_finetune")["vgg16"] == "VGG16 feature extractor"
    hotdog = titles(registry, "hotdog_resnet18_finetune")
    assert (hotdog["resnet18_ft"], hotdog["resnet18_sc"]) == ("ResNet-18, ImageNet weights", "ResNet-18, random weights")


def test_the_words_the_templates_once_typed_are_the_automatic_titles_of_their_params():
    """So a project made from those templates has an automatic title, which the form lets follow."""
    once = {("vgg16", "imagenet", True): "VGG16 feature extractor",
            ("resnet18", "imagenet", False): "ResNet-18, ImageNet weights",
            ("resnet18", "none", False): "ResNet-18, random weights"}
    for (arch, weights, frozen), title in once.items():
        assert auto_title(ENTRY, {"arch": arch, "weights": weights, "feature_extractor": frozen}) == title


def test_the_title_follows_the_architecture_and_the_weights():
    assert auto_title(ENTRY, {"arch": "resnet18"}) == "ResNet-18 feature extractor"
    assert auto_title(ENTRY, {"arch": "resnet18", "weights": "weights/resnet18-custom.pth",
                              "feature_extractor": False}) == "ResNet-18, weights from resnet18-custom.pth"
    assert auto_title(ENTRY, {"arch": "convnext_tiny", "weights": "none"}) == \
        "ConvNeXt-Tiny feature extractor, random weights"
    assert set(ARCH_NAMES) == set(ARCHS)  # every architecture the node offers has its name


@given(st.sampled_from(ARCHS), st.one_of(st.sampled_from(["imagenet", "none"]), st.text(min_size=1, max_size=40)),
       st.booleans())
def test_every_backbone_title_names_its_network_and_its_weights_unless_they_are_the_default(arch, weights, frozen):
    title = auto_title(ENTRY, {"arch": arch, "weights": weights, "feature_extractor": frozen})
    assert title.startswith(ARCH_NAMES[arch])
    assert ("feature extractor" in title) == frozen
    if weights == "none":
        assert title.endswith("random weights")
    elif weights == "imagenet":
        assert title.endswith("feature extractor" if frozen else "ImageNet weights")
    else:
        assert ", weights from " in title
