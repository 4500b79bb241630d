"""Advice nodes: which transfer-learning strategy suits a dataset and a backbone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nodeflow.node import Node, NodeParams, Port, RunContext
from nodes.engine.models import summarize
from nodes.ports import IMAGES, METRICS, MODEL, ImageSet, Metrics, ModelValue


STRATEGIES = {
    ("small", "similar"): (
        "feature_extraction",
        "little data from a domain like the backbone's: its features already fit, and training more than a "
        "classifier on them would over-fit",
        "CNN codes + linear classifier, or keep the backbone frozen (feature_extractor: true) and train only a new head"),
    ("small", "different"): (
        "finetune_top",
        "little data from another domain: the early blocks' generic features (edges, textures) still help, the "
        "late ones are too specific, and there is too little data to retrain everything",
        "train a new head on the frozen backbone, then unfreeze the last block(s) with fine-tune and a low lr"),
    ("large", "similar"): (
        "finetune_top",
        "plenty of data from a similar domain: fine-tuning the top blocks adapts the features without much risk "
        "of over-fitting, and the early blocks need no change",
        "train the new head first, then fine-tune the last blocks (discriminative lrs, e.g. block_lrs)"),
    ("large", "different"): (
        "finetune_all",
        "plenty of data from another domain: every block's features need to adapt, and there is enough data to "
        "do so (pretrained weights still start better than random)",
        "train the head, then unfreeze all blocks (fine-tune with every block named) with layer-wise lrs"),
}


def recommend(images_per_class: float, similarity: str, small_per_class: int,
              blocks: list[str] | None = None) -> dict[str, str]:
    """The transfer-learning strategy for one of the four scenarios (target set small or large ×
    similar or different to the backbone's source data), with the reason and the nodeflow recipe."""
    size = "small" if images_per_class < small_per_class else "large"
    strategy, why, how = STRATEGIES[(size, similarity)]
    if blocks and strategy == "finetune_top":
        how += f" (e.g. finetune.unfreeze: [{blocks[-1]}])"
    elif blocks and strategy == "finetune_all":
        how += f" (finetune.unfreeze: [{', '.join(blocks)}])"
    return {"strategy": strategy, "scenario": f"{size} dataset, {similarity} domain",
            "why": f"{images_per_class:.0f} training images per class ({size}: threshold {small_per_class}); {why}",
            "how": how}


class RecommendStrategy(Node):
    """Says which transfer-learning strategy suits a dataset and backbone: feature extraction,
    fine-tuning the top blocks, or fine-tuning all, from the training split's size and how similar
    you say the images are to the backbone's training data (ImageNet photos for 'imagenet')."""

    type = "train.recommend"
    title = "Recommend a strategy"
    category = "Training"
    inputs = (Port("data", IMAGES, "The target dataset"),
              Port("model", MODEL, "Optional: the backbone, to name the blocks to unfreeze", optional=True))
    outputs = (Port("recommendation", METRICS, "The strategy, scenario and reason"),)

    class Params(NodeParams):
        similarity: Literal["similar", "different"] = Field("similar", description=(
            "Are your images like the backbone's source data (e.g. everyday photos for ImageNet)?"))
        small_per_class: int = Field(1000, ge=1, le=10_000_000, description=(
            "Fewer training images per class than this counts as a small dataset"))

    def run(self, ctx: RunContext, params: Params, data: ImageSet, model: ModelValue | None = None) -> dict:
        train = len(data.split("train"))
        per_class = train / max(1, len(data.classes))
        blocks = None
        if model is not None:
            blocks = [b["name"] for b in summarize(model.spec)["blocks"] if b["kind"] == "backbone"] or None
        advice = recommend(per_class, params.similarity, params.small_per_class, blocks)
        ctx.log(f"{advice['strategy']}: {advice['why']}. How: {advice['how']}")
        ctx.preview("metrics_table", {"columns": ["item", "value"],
                                      "rows": [{"item": k, "value": v} for k, v in advice.items()]})
        ctx.log_metric("images_per_class", per_class)
        return {"recommendation": Metrics({"train_images": float(train), "images_per_class": per_class,
                                           "small": float(per_class < params.small_per_class)},
                                          {"recommendation": advice})}
