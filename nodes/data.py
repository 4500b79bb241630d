"""Data nodes: find labelled images, format them to a fixed size, augment the training split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from string import Template
from typing import Literal

from pydantic import Field

from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext, ScriptContext, ScriptPart, fingerprints_fresh
from nodeflow.paths import FolderPath
from nodes.engine.download import MIRROR_ENV, DownloadError
from nodes.engine.images import (DatasetLayoutError, build_image_set, find_split_dirs, folder_fingerprint,
                                 sample_grid)
from nodes.engine.scripting import IMPORTS, ScriptData, call, functions, transform
from nodes.engine.pets import PETS, cats_vs_dogs
from nodes.ports import IMAGES, ImageSet


def _class_names(root: str) -> list[str] | None:
    """Class folder names under a dataset root, found by listing folders only (cheap enough to
    run during validation); None when the root is unset or unreadable."""
    folder = Path(root).expanduser()
    try:
        if (folder / "PetImages").is_dir():
            folder = folder / "PetImages"
        splits = find_split_dirs(folder)
        if splits:
            folder = splits["train"]
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    return names or None


class _SplitParams(NodeParams):
    validation_fraction: float = Field(0.2, ge=0.0, lt=1.0, description=(
        "Share of each class held out for validation, when the root has no train/validation/test folders"))
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description=(
        "Share of each class held out for testing, when the root has no train/validation/test folders"))
    seed: int = Field(0, ge=0, description="Seed of the random split and of max_per_class sampling")
    max_per_class: int = Field(0, ge=0, description="Use at most this many images per class and split (0: all)")
    verify: bool = Field(True, description="Decode every image once and skip unreadable files (counted)")


def _dataset_facts(root: str, node_id: str | None) -> dict:
    classes = _class_names(root) if root else None
    return {"data": {"classes": classes, "dataset_node": node_id, "formatted": False}}


def _load(ctx: RunContext, root: Path, params: _SplitParams) -> ImageSet:
    if params.validation_fraction + params.test_fraction >= 1.0:
        raise ParamProblem("validation_fraction + test_fraction must leave some images for training",
                           param="validation_fraction")
    try:
        data = build_image_set(root, params.validation_fraction, params.test_fraction, params.seed,
                               params.max_per_class, params.verify)
    except DatasetLayoutError as exc:
        raise ParamProblem(str(exc), param="root") from None
    ctx.check_files((Path(file) for items in data.splits.values() for file, _ in items), param="root")
    data = data.with_(sources={"dataset": ctx.node_id})
    counts = data.counts()
    ctx.log(f"{len(data.classes)} classes {list(data.classes)}; images per split {counts}; "
            f"skipped {data.skipped} unreadable or non-image file(s)")
    for split, n in counts.items():
        ctx.log_metric(f"{split}_images", n)
    ctx.log_metric("skipped_images", data.skipped)
    if not data.split("train"):
        raise ParamProblem(f"no training images found under '{root}'", param="root")
    ctx.preview("samples", sample_grid(data, seed=params.seed))
    return data


def _dataset_script(ctx: ScriptContext, root: str) -> ScriptPart:
    """``find_images`` with the dataset's params: the same files in the same splits, in the same order."""
    classes, splits = ctx.name("classes"), ctx.name("splits")
    find = call(f"{classes}, {splits} = find_images", [
        root, ctx.const("validation_fraction"), ctx.const("test_fraction"), ctx.const("seed"),
        ctx.const("max_per_class"), ctx.const("verify")])
    code = Template(
        '$find\nresults["$node"] = {f"{split}_images": len(items) for split, items in $splits.items()}\n'
        'print("$node:", $classes, results["$node"])').substitute(find=find, node=ctx.node_id, splits=splits,
                                                                   classes=classes)
    return ScriptPart(code=code, outputs={"data": ScriptData(classes, splits)}, imports=IMPORTS,
                      functions=functions("image_files", "split_by_class", "sample_per_class", "find_images"))


class ImageFolderDataset(Node):
    """Labelled images from a folder: either train/ validation/ test/ folders each holding one
    sub-folder per class, or one folder of class sub-folders split by fractions with a seed."""

    type = "data.image_folder"
    title = "Image folder dataset"
    category = "Data"
    outputs = (Port("data", IMAGES, "Image files with labels and splits"),)

    class Params(_SplitParams):
        root: FolderPath = Field("", description="Folder of the dataset (class sub-folders, or train/validation/test)")

    @classmethod
    def fingerprint(cls, params: Params) -> str:
        return folder_fingerprint(Path(params.root), fresh=fingerprints_fresh()) if params.root else "no-root"

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        if not params.root:
            raise ParamProblem("set root to a folder of images", param="root")
        return _dataset_facts(params.root, node_id)

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params) -> ScriptPart:
        return _dataset_script(ctx, ctx.const("root"))

    def run(self, ctx: RunContext, params: Params) -> dict:
        return {"data": _load(ctx, ctx.resolve_path(params.root), params)}


PET_URL_NOTE = ("set root to a local folder: an image-folder layout (train/ validation/ test/ "
                "with a folder per class, e.g. cat/ and dog/), or one folder of class folders such as "
                "Microsoft's PetImages (PetImages/Cat, PetImages/Dog)")


class CatsVsDogsDataset(Node):
    """Cats vs dogs. With no root, downloads the Oxford-IIIT Pet images (cat/dog labels) into the
    workspace; with a root, reads a local copy (an image-folder layout or Microsoft's PetImages,
    whose corrupt and non-RGB files are skipped or converted)."""

    type = "data.cats_vs_dogs"
    title = "Cats vs dogs dataset"
    category = "Data"
    outputs = (Port("data", IMAGES, "Cat and dog images with labels and splits"),)

    class Params(_SplitParams):
        root: FolderPath = Field("", description="Local copy of the data; empty downloads Oxford-IIIT Pet when online")
        download_timeout: float = Field(20.0, gt=0, le=600, description="Seconds to wait for the server")

    @classmethod
    def fingerprint(cls, params: Params) -> str:
        if not params.root:
            return "download:oxford-iiit-pet"
        return folder_fingerprint(Path(params.root), fresh=fingerprints_fresh())

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        return _dataset_facts(params.root, node_id)

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params) -> ScriptPart:
        """With no root, Oxford-IIIT Pet downloaded by torchvision into ./datasets, laid out as the
        node lays it out."""
        if params.root:
            return _dataset_script(ctx, ctx.const("root"))
        part = _dataset_script(ctx, 'download_pets("datasets")')
        return replace(part, functions=(*part.functions, *functions("download_pets")))

    def run(self, ctx: RunContext, params: Params) -> dict:
        root = ctx.resolve_path(params.root) if params.root else self._download(ctx, params.download_timeout)
        return {"data": _load(ctx, root, params)}

    def _download(self, ctx: RunContext, timeout: float) -> Path:
        """Oxford-IIIT Pet into the workspace, re-sorted into cat/ and dog/ folders (links, not copies)."""
        base = ctx.workspace / "datasets"
        ctx.log(f"cats vs dogs: Oxford-IIIT Pet in '{base / PETS}' (downloaded there first, about 800 MB, if absent)")
        try:
            return cats_vs_dogs(base, timeout, progress=lambda done, total: total and ctx.progress(done, total))
        except DownloadError as exc:
            raise ParamProblem(
                f"could not download the cats-vs-dogs images: {exc}. This machine may be offline: set {MIRROR_ENV} "
                f"to the base URL of a server that holds Oxford-IIIT Pet's images.tar.gz and annotations.tar.gz, "
                f"or put the published layout (images/, annotations/trainval.txt, test.txt) into '{base / PETS}', "
                f"or {PET_URL_NOTE}", param="root") from None
        except (OSError, ValueError) as exc:
            raise ParamProblem(f"could not sort Oxford-IIIT Pet in '{base / PETS}' into cat/ and dog/ ({exc}); "
                               f"{PET_URL_NOTE}", param="root") from None


class ImageFormatter(Node):
    """Makes every image the same shape: resize, then crop to height×width, pick channels and
    normalise (ImageNet statistics suit ImageNet-pretrained backbones)."""

    type = "data.format"
    title = "Image formatter"
    title_template = "Resize + crop to {height}×{width}×{channels}"
    category = "Data"
    inputs = (Port("data", IMAGES),)
    outputs = (Port("data", IMAGES, "The same images, with their size and normalisation set"),)

    class Params(NodeParams):
        height: int = Field(150, ge=8, le=2048, description="Output image height in pixels")
        width: int = Field(150, ge=8, le=2048, description="Output image width in pixels")
        channels: Literal[1, 3] = Field(3, description="3 for RGB, 1 for grayscale")
        resize: Literal["shorter_side", "stretch"] = Field("shorter_side", description=(
            "shorter_side keeps the aspect ratio and crops; stretch resizes straight to height×width"))
        resize_to: int = Field(0, ge=0, le=4096, description=(
            "shorter_side: resize the shorter side to this many pixels, then crop (0: the crop size); "
            "256 with a 224 crop is the usual ImageNet evaluation"))
        crop: Literal["center", "random"] = Field("center", description=(
            "How to crop after resizing; random crops apply to the training split only"))
        normalize: Literal["imagenet", "none"] = Field("imagenet", description="Per-channel normalisation")

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        if params.resize_to and params.resize_to < max(params.height, params.width):
            raise ParamProblem(f"resize_to ({params.resize_to}) must be at least the crop size "
                               f"({max(params.height, params.width)}), or 0", param="resize_to")
        return {"data": {**inputs.get("data", {}), "formatted": True, "image_size": [params.height, params.width],
                         "channels": params.channels, "format_node": node_id}}

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params, data: ScriptData) -> ScriptPart:
        """The evaluation transform, and the training one (which differs by a random crop, and by
        augmentations an earlier node set)."""
        resize_to = ctx.const("resize_to") if params.resize_to and params.resize == "shorter_side" else None
        formatted = replace(data, format=params.model_dump(mode="json"), size=(ctx.const("height"), ctx.const("width")),
                            resize_to=resize_to, train_transform=ctx.name("train"), eval_transform=ctx.name("eval"))
        evaluation, training = transform(formatted, False), transform(formatted, True)
        code = f"{ctx.name('eval')} = {evaluation}\n{ctx.name('train')} = " + (
            training if training != evaluation else f"{ctx.name('eval')}  # training images are formatted alike")
        return ScriptPart(code=code, outputs={"data": formatted}, imports=IMPORTS)

    @staticmethod
    def within_limits(ctx: RunContext, params: Params) -> None:
        """Refuse, before any image is decoded, a size over the server's largest image side: every
        later node (augmentation, training, scoring) decodes at this size, so it sets their memory."""
        for name in ("height", "width", "resize_to"):
            ctx.limits.check_image_side(getattr(params, name), name)

    def run(self, ctx: RunContext, params: Params, data: ImageSet) -> dict:
        self.within_limits(ctx, params)
        formatted = data.with_(format=params.model_dump(mode="json"),
                               sources={**data.sources, "format": ctx.node_id})
        ctx.preview("samples", sample_grid(formatted, seed=ctx.seed))
        return {"data": formatted}


class Augmentation(Node):
    """Random changes to training images (flips, crops, rotation, colour, blur, policies, erasing)
    so a small dataset goes further. Validation and test images are never augmented."""

    type = "data.augment"
    title = "Augmentation"
    category = "Data"
    inputs = (Port("data", IMAGES),)
    outputs = (Port("data", IMAGES, "The same images with training-time augmentation"),)

    class Params(NodeParams):
        hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip")
        vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip")
        random_resized_crop: bool = Field(False, description="Crop a random area and resize it (replaces the formatter's crop)")
        min_scale: float = Field(0.5, gt=0, le=1, description="Smallest area kept by the random resized crop")
        rotation: float = Field(0.0, ge=0, le=180, description="Maximum rotation in degrees")
        color_jitter: float = Field(0.0, ge=0, le=1, description="Brightness/contrast/saturation jitter strength")
        blur: float = Field(0.0, ge=0, le=1, description="Probability of a Gaussian blur")
        blur_sigma: float = Field(1.5, gt=0, le=10, description="Largest blur sigma")
        policy: Literal["none", "autoaugment", "randaugment", "trivialaugment"] = Field(
            "none", description="A learned or random augmentation policy")
        random_erasing: float = Field(0.0, ge=0, le=1, description="Probability of erasing a random rectangle")

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        return {"data": {**inputs.get("data", {}), "augmented": True}}

    @staticmethod
    def ops(params: Params) -> list[dict]:
        ops: list[dict] = []
        if params.random_resized_crop:
            ops.append({"op": "random_resized_crop", "min_scale": params.min_scale})
        if params.hflip:
            ops.append({"op": "hflip", "p": params.hflip})
        if params.vflip:
            ops.append({"op": "vflip", "p": params.vflip})
        if params.rotation:
            ops.append({"op": "rotation", "degrees": params.rotation})
        if params.color_jitter:
            ops.append({"op": "color_jitter", "strength": params.color_jitter})
        if params.blur:
            ops.append({"op": "gaussian_blur", "p": params.blur, "sigma": params.blur_sigma, "kernel": 5})
        if params.policy != "none":
            ops.append({"op": params.policy})
        if params.random_erasing:
            ops.append({"op": "random_erasing", "p": params.random_erasing})
        return ops

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params, data: ScriptData) -> ScriptPart:
        """The training transform with these augmentations (``make_transform``'s order); as in the
        graph, they replace those of an earlier augmentation node."""
        steps, crop, erasing = [], None, None
        height, width = data.size
        for op in cls.ops(params):
            name = op["op"]
            if name == "random_resized_crop":
                crop = (f"v2.RandomResizedCrop(({height}, {width}), scale=({ctx.const('min_scale')}, 1.0), "
                        "antialias=True)")
            elif name in ("hflip", "vflip"):
                flip = "Horizontal" if name == "hflip" else "Vertical"
                steps.append(f"v2.Random{flip}Flip({ctx.const(name)})")
            elif name == "rotation":
                steps.append(f"v2.RandomRotation({ctx.const('rotation')})")
            elif name == "color_jitter":
                s = ctx.const("color_jitter")
                steps.append(f"v2.ColorJitter(brightness={s}, contrast={s}, saturation={s}, hue=min(0.5, {s} / 4))")
            elif name == "gaussian_blur":
                steps.append(f"v2.RandomApply([v2.GaussianBlur({op['kernel']}, sigma=(0.1, {ctx.const('blur_sigma')}))], "
                             f"p={ctx.const('blur')})")
            elif name == "random_erasing":
                erasing = f"v2.RandomErasing(p={ctx.const('random_erasing')})"
            else:
                steps.append({"autoaugment": "v2.AutoAugment()", "randaugment": "v2.RandAugment(magnitude=9)",
                              "trivialaugment": "v2.TrivialAugmentWide()"}[name])
        augmented = replace(data, augment=tuple(steps), crop=crop, erasing=erasing, train_transform=ctx.name("train"))
        return ScriptPart(code=f"{ctx.name('train')} = {transform(augmented, True)}", outputs={"data": augmented},
                          imports=IMPORTS)

    def run(self, ctx: RunContext, params: Params, data: ImageSet) -> dict:
        augmented = data.with_(augment=tuple(self.ops(params)), sources={**data.sources, "augment": ctx.node_id})
        if augmented.format:
            ctx.preview("samples", sample_grid(augmented, train=True, seed=ctx.seed))
        return {"data": augmented}
