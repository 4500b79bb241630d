"""The exported script's own functions (``nodeflow export-script``): plain torch and torchvision.

Node script parts copy these into the script by their source text, so each may use only what the
script imports (``os``, ``random``, ``OrderedDict``, ``torch``, ``nn``, ``torchvision``, ``v2``,
``DataLoader``, ``pil_loader``), the other functions here and the constants of ``folders``
(``scripting.functions`` writes those a function reads into the script before it). They do what
the engine does, step for step where numbers depend on it (the split, the order of random
draws), without its caches, hooks and stop points: a person reads them, in the manner of
torchvision's reference ``train.py``. Where the engine's step is the same, the engine calls
these very functions (``loop`` its freezing, training mode and optimizer step, ``images`` and
``pipeline`` the dataset and image reading, ``models`` the feature blocks and weights loading),
so a change to one of them changes the graph's run and the exported script alike.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import sys
from collections import OrderedDict

import torch
from torch import nn
from torch.utils.data import DataLoader


def _imported_when_used(name):
    """The module ``name``, loaded at its first attribute access (the standard library's
    LazyLoader): torchvision's import pulls in torch._dynamo, seconds a run that builds no network
    and reads no image (``nodeflow run --target input``, ``nodeflow nodes``) need not pay."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


torchvision = _imported_when_used("torchvision")


def pil_loader(path):
    """torchvision's ``pil_loader`` (the script imports it from torchvision.datasets.folder)."""
    return torchvision.datasets.folder.pil_loader(path)

from nodes.engine.folders import IMAGE_SUFFIXES, SPLIT_ALIASES  # the script gets them as constants


def image_files(folder):
    """The image files under ``folder`` (by their suffix), hidden folders left out, in name order."""
    found = []
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(base, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    return found


def find_images(root, validation_fraction, test_fraction, seed, max_per_class=0, verify=True):
    """The class names and the (path, label) pairs of each split under ``root``: train/ validation/
    test/ folders of class folders, or one folder of class folders (Microsoft's PetImages too)
    split at random per class by the fractions. Unreadable files are left out when ``verify``."""

    def folders(path):
        return sorted(name for name in os.listdir(path)
                      if not name.startswith(".") and os.path.isdir(os.path.join(path, name)))

    def readable(item):
        try:
            pil_loader(item[0])
            return True
        except Exception:
            return False

    root = os.path.expanduser(root)
    if not os.path.isdir(root):  # the data lies elsewhere on this machine: say how to point at it
        raise SystemExit(f"dataset folder '{root}' does not exist on this machine; give its folder on the command "
                         "line (--data PATH, or see --help)")
    if os.path.isdir(os.path.join(root, "PetImages")):
        root = os.path.join(root, "PetImages")
    names = {name.lower(): name for name in folders(root)}
    split_dirs = {}
    for split, aliases in SPLIT_ALIASES.items():
        found = [names[alias] for alias in aliases if alias in names]
        if found:
            split_dirs[split] = os.path.join(root, found[0])
    if "train" in split_dirs:  # the splits are given
        classes = folders(split_dirs["train"])
        splits = {split: [(path, label) for label in classes if os.path.isdir(os.path.join(folder, label))
                          for path in image_files(os.path.join(folder, label))] for split, folder in split_dirs.items()}
        if verify:
            splits = {split: list(filter(readable, items)) for split, items in splits.items()}
    else:  # one folder per class: the same share of each class goes to validation and test
        classes = folders(root)
        everything = [(path, label) for label in classes for path in image_files(os.path.join(root, label))]
        if verify:
            everything = list(filter(readable, everything))
        splits = split_by_class(everything, classes, validation_fraction, test_fraction, seed)
    if max_per_class:
        splits = sample_per_class(splits, classes, max_per_class, seed)
    index = {label: i for i, label in enumerate(classes)}
    return classes, {split: [(path, index[label]) for path, label in items] for split, items in splits.items()}


def split_by_class(items, classes, validation_fraction, test_fraction, seed):
    """A stratified random split of (path, label) pairs: each class shuffled by one generator seeded
    with ``seed``, then cut by the same fractions into validation, test and train."""
    rng = random.Random(seed)
    splits = {"train": [], "validation": [], "test": []}
    for label in classes:
        mine = [item for item in items if item[1] == label]
        rng.shuffle(mine)
        n_val, n_test = round(len(mine) * validation_fraction), round(len(mine) * test_fraction)
        splits["validation"] += mine[:n_val]
        splits["test"] += mine[n_val:n_val + n_test]
        splits["train"] += mine[n_val + n_test:]
    return splits


def sample_per_class(splits, classes, max_per_class, seed):
    """At most ``max_per_class`` pairs of each class in each split, drawn at random (one generator
    seeded with ``seed`` for all the splits, in their order)."""
    rng = random.Random(seed)
    sampled = {}
    for split, items in splits.items():
        sampled[split] = []
        for label in classes:
            mine = [item for item in items if item[1] == label]
            sampled[split] += rng.sample(mine, min(len(mine), max_per_class))
    return sampled


def download_pets(folder):
    """Oxford-IIIT Pet, downloaded by torchvision into ``folder``, as train/ and test/ folders of
    cat/ and dog/ (links to the images, not copies); the folder they are in."""
    target = os.path.join(folder, "cats_vs_dogs")
    if os.path.isdir(os.path.join(target, "train")):
        return target
    torchvision.datasets.OxfordIIITPet(folder, split="trainval", target_types="binary-category", download=True)
    pets = os.path.join(folder, "oxford-iiit-pet")
    for split, listing in (("train", "trainval.txt"), ("test", "test.txt")):
        with open(os.path.join(pets, "annotations", listing)) as lines:
            for line in lines:
                name, _, species, *_ = line.split()
                kind = os.path.join(target, split, "cat" if species == "1" else "dog")
                os.makedirs(kind, exist_ok=True)
                if not os.path.exists(os.path.join(kind, f"{name}.jpg")):
                    os.symlink(os.path.abspath(os.path.join(pets, "images", f"{name}.jpg")),
                               os.path.join(kind, f"{name}.jpg"))
    return target


class ImageFiles(torch.utils.data.Dataset):
    """Labelled image files, read as RGB whatever they were stored as, through ``transform``."""

    def __init__(self, items, transform):
        self.items, self.transform = list(items), transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, label = self.items[index]
        return self.transform(pil_loader(path)), label


def loader(items, transform, batch_size, shuffle=False, seed=0, workers=0, keep_workers=False):
    """Batches of labelled files. The shuffle draws from a generator seeded with ``seed`` (a new
    order every epoch, the same every run); a loader that does not shuffle gets a generator of its
    own too, so reading it draws nothing from torch's global one (which dropout and random
    augmentation use). ``workers`` -1: one worker process per core this process may use."""
    if workers < 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return DataLoader(ImageFiles(items, transform), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed), num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=keep_workers and workers > 0)


def backbone(arch, weights, model=None):
    """A torchvision network (``model``, else a new one) with ImageNet weights ("imagenet", downloaded
    by torchvision), random ones ("none"), or those of a weights file (a torch.save file's path, or
    the state dict read from one), read as the graph's backbone node reads it: with torchvision's key
    names (``conv1.weight``, ``features.0.weight``: its published files, ``torch.save(model.state_dict())``)
    or the feature blocks' (``stem.conv1.weight``, ``block1.0.weight``, as nodeflow's export node
    writes them), whichever the file has more of. Only the feature blocks load: a classifier in the
    file, of any size, is left out. A file without every tensor of the blocks, with others under
    their names, or with other shapes is refused before anything loads."""
    if weights == "imagenet":
        return torchvision.models.get_model(arch, weights="DEFAULT")
    model = torchvision.models.get_model(arch, weights=None) if model is None else model
    if weights == "none":
        return model
    state, source = weights, "the state dict"
    if not isinstance(weights, dict):  # a state dict, or a checkpoint holding one; a wrapper's prefixes dropped
        state, source = torch.load(weights, map_location="cpu", weights_only=True), f"'{weights}'"
        for key in ("state_dict", "model", "model_state"):
            if isinstance(state.get(key), dict):
                state = state[key]
        unwrapped = {}
        for key, tensor in state.items():
            while key.startswith(("module.", "model.")):
                key = key.split(".", 1)[1]
            unwrapped[key] = tensor
        state = unwrapped
    # the feature blocks hold the network's own tensors: each has a name in the network and one in the blocks
    split = vgg_blocks if arch.startswith("vgg") else resnet_blocks if arch.startswith("resnet") else feature_blocks
    blocks = nn.Sequential(split(model))
    ours = blocks.state_dict(keep_vars=True)
    by_tensor = {id(tensor): key for key, tensor in ours.items()}
    torchvisions = {key: by_tensor[id(tensor)] for key, tensor in model.state_dict(keep_vars=True).items()
                    if id(tensor) in by_tensor}
    names = max((torchvisions, {key: key for key in ours}), key=lambda names: len(state.keys() & names.keys()))
    roots = {key.split(".", 1)[0] for key in names}  # a key under these is the blocks'; any other is a head
    problems = [f"{key} is missing" for key in names if key not in state and not key.endswith("num_batches_tracked")]
    problems += [f"{key} is not {arch}'s" for key in state if key not in names and key.split(".", 1)[0] in roots]
    problems += [f"{key} is {list(state[key].shape)}, not {list(ours[names[key]].shape)}" for key in state
                 if key in names and state[key].shape != ours[names[key]].shape]
    if problems:
        raise ValueError(f"{source} does not hold {arch}'s feature blocks: {'; '.join(problems[:3])}"
                         + (f" ({len(problems)} problems in all)" if len(problems) > 3 else ""))
    blocks.load_state_dict({names[key]: tensor for key, tensor in state.items() if key in names}, strict=False)
    return model


def vgg_blocks(vgg):
    """VGG's feature layers cut after each max-pool: block1 ... block5 (the classifier is dropped)."""
    blocks, current = OrderedDict(), []
    for layer in vgg.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks[f"block{len(blocks) + 1}"] = nn.Sequential(*current)
            current = []
    return blocks


def resnet_blocks(resnet):
    """ResNet without its pooling and fc: stem (conv1, bn1, relu, maxpool), layer1 ... layer4."""
    stem = nn.Sequential(OrderedDict(conv1=resnet.conv1, bn1=resnet.bn1, relu=resnet.relu, maxpool=resnet.maxpool))
    return OrderedDict([("stem", stem)] + [(f"layer{i}", getattr(resnet, f"layer{i}")) for i in range(1, 5)])


def feature_blocks(model):
    """The feature stages of an EfficientNet, MobileNet or ConvNeXt: stem, stage1, stage2, ..."""
    children = list(model.features)
    return OrderedDict([("stem", children[0])] + [(f"stage{i}", child) for i, child in enumerate(children[1:], 1)])


def init_linear(linear, init):
    """A new layer's weights drawn again (xavier_uniform, xavier_normal or kaiming_normal), bias 0."""
    if init == "kaiming_normal":
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    else:
        getattr(nn.init, init + "_")(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def freeze(model, frozen):
    """Blocks named in ``frozen`` keep their weights: no gradients for them."""
    for name, block in model.named_children():
        for param in block.parameters():
            param.requires_grad_(name not in frozen)


def param_groups(model, backbone_blocks, lr, head_lr_mult=1.0):
    """What trains, and at which rate: the backbone's trainable blocks at ``lr``, the layers after
    it (the new head) at ``lr * head_lr_mult``."""
    backbone, head = [], []
    for name, block in model.named_children():
        trainable = [p for p in block.parameters() if p.requires_grad]
        (backbone if name in backbone_blocks else head).extend(trainable)
    groups = [{"params": backbone, "lr": lr}, {"params": head, "lr": lr * head_lr_mult}]
    return [group for group in groups if group["params"]]


def autocast_dtype(device, enabled=True):
    """Mixed precision on CUDA (bf16 where the GPU has it, else fp16 with loss scaling); None,
    full precision, elsewhere."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_mode(model, frozen=(), freeze_batchnorm=False):
    """Training mode, except blocks named in ``frozen`` (and, with ``freeze_batchnorm``, every batch
    norm), which stay in eval mode, so their statistics and dropout behave as at inference."""
    model.train()
    for name, block in model.named_children():
        if name in frozen:
            block.eval()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def optimizer_step(loss, optimizer, scheduler=None, scaler=None, grad_clip=0.0):
    """One batch's update from its (finite) loss: gradients (scaled with ``scaler``), clipped to
    ``grad_clip`` when set, the optimizer's step, then the scheduler's (it steps every batch)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()


def train_one_epoch(model, criterion, optimizer, data_loader, device, frozen=(), freeze_batchnorm=False,
                    scheduler=None, scaler=None, grad_clip=0.0, dtype=None):
    """One pass over the training data; the mean loss and accuracy."""
    train_mode(model, frozen, freeze_batchnorm)
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in data_loader:
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise ArithmeticError(f"the training loss became {loss.item()}: lower the learning rate")
        optimizer_step(loss, optimizer, scheduler, scaler, grad_clip)
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def cpu_state(model):
    """A copy of the weights on the CPU, detached, that later training steps cannot change."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def keep_best(best, stale, val_loss, model):
    """Early stopping's bookkeeping after an epoch: ``best``, the lowest validation loss so far with
    a copy of the weights then (or None), and ``stale``, the epochs since it last fell. A NaN loss
    (no validation images) changes neither."""
    if math.isnan(val_loss):
        return best, stale
    if best is None or val_loss < best[0]:
        return (val_loss, cpu_state(model)), 0
    return best, stale + 1


@torch.inference_mode()
def evaluate(model, criterion, data_loader, device, dtype=None):
    """The mean loss and the accuracy of ``model`` on a split (NaN for an empty one)."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in data_loader:
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        total_loss += criterion(logits.float(), labels).item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return (total_loss / seen, correct / seen) if seen else (math.nan, math.nan)
