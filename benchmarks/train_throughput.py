"""Training throughput, side by side, in one process, on one generated set of JPEG photos:

- a hand-written PyTorch loop (ImageFolder + transforms + DataLoader + model + SGD),
- the same model trained on pre-made tensors (what the data pipeline is measured against),
- the same work through the nodeflow executor (same model, batch size, transforms, epochs),
- head-only training of a frozen backbone, without and with the feature cache,
- fine-tuning VGG16's block5 (blocks 1-4 frozen) without and with the cache, and a re-run of it.

    python benchmarks/train_throughput.py [--device cpu|cuda|auto] [--images 2000] [--epochs 3]
        [--batch-size 32] [--arch resnet18] [--size 224] [--quick] [--rows ...] [--json out.json]

Prints one table: seconds of the first epoch and of the later ones, images/s of the later epochs,
accuracy, and the peak resident memory of the row (and peak GPU memory on CUDA). ``--quick`` is
the CI smoke run (tiny images, a few seconds a row). Targets from issue #5 are printed under it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROWS = ("hand-written", "pre-made tensors", "nodeflow", "head-only, no cache", "head-only, cache",
        "fine-tune, no cache", "fine-tune, cache", "fine-tune re-run, cache")


# -- data -----------------------------------------------------------------------------------------


def make_photos(folder: Path, count: int, seed: int = 0, validation: float = 0.2) -> Path:
    """``count`` JPEGs of about 500×375 in folder/{train,validation}/{cat,dog}: smooth random
    colour fields with a blob whose hue depends on the class, plus sensor-like noise, so they
    compress like photos and a network can learn them. Made once per folder."""
    from PIL import Image, ImageDraw, ImageFilter

    done = folder / ".complete"
    if done.is_file():
        return folder
    rng = random.Random(seed)
    for i in range(count):
        label = ("cat", "dog")[i % 2]
        split = "validation" if (i // 2) % round(1 / validation) == 0 else "train"
        width, height = rng.randint(440, 560), rng.randint(330, 420)
        low = np.random.default_rng(rng.getrandbits(32)).integers(0, 255, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((width, height), Image.BICUBIC)
        pen = ImageDraw.Draw(image)
        r = rng.uniform(0.2, 0.4) * height
        x, y = rng.uniform(r, width - r), rng.uniform(r, height - r)
        tint = (rng.randint(150, 255), rng.randint(0, 90), rng.randint(0, 90))
        pen.ellipse((x - r, y - r, x + r, y + r), fill=tint if label == "cat" else tint[::-1])
        image = image.filter(ImageFilter.GaussianBlur(1.5))
        pixels = np.asarray(image, dtype=np.int16) + np.random.default_rng(i).integers(-8, 9, (height, width, 3))
        target = folder / split / label / f"{label}.{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(target, quality=90)
    done.write_text("ok")
    return folder


# -- measuring ------------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    """Linux lets a process reset its resident-set high-water mark (clear_refs 5); elsewhere the
    peak is the process's so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: torch.device) -> dict[str, float]:
    try:
        status = Path("/proc/self/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"peak_rss_mib": rss}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def summary(name: str, epoch_seconds: list[float], images: int, device: torch.device, **extra) -> dict:
    later = epoch_seconds[1:] or epoch_seconds
    return {"row": name, "first_epoch_s": epoch_seconds[0], "later_epoch_s": sum(later) / len(later),
            "images_per_s": images / (sum(later) / len(later)), "epochs": len(epoch_seconds), **extra,
            **peak_memory(device)}


# -- the hand-written loop ------------------------------------------------------------------------


def hand_model(arch: str, classes: int) -> torch.nn.Module:
    import torchvision

    model = torchvision.models.get_model(arch, weights=None)
    if hasattr(model, "fc"):
        model.fc = torch.nn.Linear(model.fc.in_features, classes)
    else:
        model.classifier[-1] = torch.nn.Linear(model.classifier[-1].in_features, classes)
    return model


def hand_transform(size: int):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                               transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def hand_loop(model, batches: Callable, device: torch.device, epochs: int, lr: float, amp: torch.dtype | None,
              channels_last: bool) -> tuple[list[float], float]:
    """The loop everyone writes; returns seconds per epoch and the last epoch's accuracy."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    times, accuracy = [], 0.0
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        correct = seen = 0
        for images, labels in batches():
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(images)
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
        sync(device)
        times.append(time.perf_counter() - start)
        accuracy = float(correct) / max(seen, 1)
    return times, accuracy


def row_hand_written(args, photos: Path, device: torch.device) -> dict:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(photos / "train"), transform=hand_transform(args.size))
    workers = args.workers if args.workers >= 0 else len(os.sched_getaffinity(0))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    times, accuracy = hand_loop(hand_model(args.arch, 2), lambda: loader, device, args.epochs, args.lr,
                                amp_dtype(device), device.type == "cuda")
    return summary("hand-written", times, len(dataset), device, train_accuracy=accuracy, workers=workers)


def row_pre_made(args, photos: Path, device: torch.device) -> dict:
    """The same model fed with tensors decoded, resized and normalised beforehand and already on
    the device: the ceiling for any data pipeline."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(photos / "train"), transform=hand_transform(args.size))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).to(device)
    labels = torch.tensor(dataset.targets).to(device)
    generator = torch.Generator()
    generator.manual_seed(0)

    def batches():
        order = torch.randperm(len(labels), generator=generator).to(device)
        for start in range(0, len(order), args.batch_size):
            index = order[start:start + args.batch_size]
            yield images[index], labels[index]

    torch.manual_seed(0)
    times, accuracy = hand_loop(hand_model(args.arch, 2), batches, device, args.epochs, args.lr, amp_dtype(device),
                                device.type == "cuda")
    return summary("pre-made tensors", times, len(labels), device, train_accuracy=accuracy)


def synthetic(args, device: torch.device) -> dict:
    """Random tensors already on the GPU: the model's own ceiling (issue #5's GPU reference)."""
    torch.manual_seed(0)
    model = hand_model(args.arch, 2)
    steps = max(4, args.images // args.batch_size)
    images = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 2, (args.batch_size,), device=device)
    times, _ = hand_loop(model, lambda: ((images, labels) for _ in range(steps)), device, args.epochs, args.lr,
                         amp_dtype(device), device.type == "cuda")
    return summary("synthetic on device", times, steps * args.batch_size, device)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# -- nodeflow -------------------------------------------------------------------------------------


def graph_json(root: Path, arch: str, size: int, batch: int, epochs: int, lr: float, frozen: str,
               feature_cache: str, workers: int, compile: bool) -> dict:
    """input → backbone → (global pool | flatten + dense) → dense(auto) → trainer; ``frozen``:
    'none' trains everything, 'backbone' the head only, 'block5' VGG's block5 and the head."""
    vgg = arch.startswith("vgg")
    nodes = [
        {"id": "input", "type": "model.input", "params": {"height": size, "width": size}},
        {"id": "backbone", "type": "model.backbone",
         "params": {"arch": arch, "weights": "none", "feature_extractor": frozen != "none"}},
        {"id": "data", "type": "data.image_folder",
         "params": {"root": str(root), "validation_fraction": 0.0, "test_fraction": 0.0, "verify": False}},
        {"id": "fmt", "type": "data.format", "params": {"height": size, "width": size}},
        {"id": "train", "type": "train.trainer",
         "params": {"optimizer": "sgd", "lr": lr, "momentum": 0.9, "epochs": epochs, "batch_size": batch,
                    "feature_cache": feature_cache, "workers": workers, "compile": compile}},
    ]
    chain = ["input", "backbone"]
    if vgg:
        nodes += [{"id": "flatten", "type": "model.flatten", "params": {}},
                  {"id": "dense", "type": "model.dense", "params": {"units": 256, "activation": "relu"}}]
        chain += ["flatten", "dense"]
    else:
        nodes.append({"id": "pool", "type": "model.global_pool", "params": {}})
        chain.append("pool")
    nodes.append({"id": "out", "type": "model.dense", "params": {"units": "auto", "activation": "none"}})
    chain.append("out")
    if frozen == "block5":
        nodes.append({"id": "finetune", "type": "train.finetune", "params": {"unfreeze": ["block5"]}})
        chain.append("finetune")
    chain.append("train")
    edges = [{"source": a, "source_port": "model", "target": b, "target_port": "model"} for a, b in zip(chain, chain[1:])]
    edges += [{"source": "data", "source_port": "data", "target": "fmt", "target_port": "data"},
              {"source": "fmt", "source_port": "data", "target": "train", "target_port": "data"}]
    return {"format": "nodeflow.graph", "version": 1, "nodes": nodes, "edges": edges}


def run_nodeflow(name: str, args, graph: dict, workspace: Path, device: torch.device, images: int) -> dict:
    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.node import Registry

    registry = Registry.discover(plugins=False)
    marks: list[float] = []
    started: list[float] = []
    info: dict = {}

    def listen(event) -> None:
        if event.node_id != "train":
            return
        if event.kind == "node_started":
            started.append(time.perf_counter())
        elif event.kind == "metric" and event.data["name"] == "train_loss":
            sync(device)
            marks.append(time.perf_counter())
        elif event.kind == "preview" and event.data["kind"] == "feature_cache":
            info.update(event.data["payload"])

    torch.manual_seed(0)
    executor = Executor(registry, workspace, device=str(device), listeners=[listen])
    report = executor.run(Graph.from_data(graph), target="train")
    if not report.ok:
        raise RuntimeError(json.dumps(report.to_json(), default=str)[:2000])
    times = [b - a for a, b in zip([started[0], *marks], marks)]
    history = report.outputs["train"]["model"].history
    val = history[-1]["val_accuracy"]
    extra = {"train_accuracy": history[-1]["train_accuracy"]}
    if not math.isnan(val):
        extra["val_accuracy"] = val
    if info:
        extra["cache"] = "on" if info.get("enabled") else "off"
    return summary(name, times, images, device, **extra)


def count(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.jpg"))


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--images", type=int, default=2000, help="JPEGs to generate (a fifth go to validation)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--arch", default="resnet18", help="model of the throughput and head-only rows")
    parser.add_argument("--size", type=int, default=224, help="image side of the throughput and head-only rows")
    parser.add_argument("--vgg-size", type=int, default=150, help="image side of the VGG16 fine-tune rows")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=-1, help="data workers (-1: every available core)")
    parser.add_argument("--compile", action="store_true", help="torch.compile in nodeflow (CUDA)")
    parser.add_argument("--rows", nargs="*", default=None, help=f"subset of: {', '.join(ROWS)}, synthetic")
    parser.add_argument("--cache-dir", default=None, help="where the photos and workspaces go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 48 tiny images, 2 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.batch_size, args.size, args.vgg_size = 40, 2, 8, 32, 32
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    rows = args.rows or [*ROWS, *(["synthetic"] if device.type == "cuda" else [])]
    base = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="nodeflow-bench-"))
    photos = make_photos(base / f"photos-{args.images}", args.images)
    n_train = count(photos / "train")
    print(f"# {n_train} training + {count(photos / 'validation')} validation JPEGs (~500×375) in {photos}")
    print(f"# {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
          + f", load average {os.getloadavg()[0]:.1f} at start")
    results: list[dict] = []
    workspaces = base / f"workspaces-{time.time_ns()}"

    def nodeflow(name: str, frozen: str, cache: str, arch: str, size: int, workspace: str, validation: bool,
                 lr: float | None = None) -> None:
        root = photos if validation else photos / "train"
        graph = graph_json(root, arch, size, args.batch_size, args.epochs, lr or args.lr, frozen, cache, args.workers,
                           args.compile)
        results.append(run_nodeflow(name, args, graph, workspaces / workspace, device, n_train))

    plan: dict[str, Callable[[], None]] = {
        "hand-written": lambda: results.append(row_hand_written(args, photos, device)),
        "pre-made tensors": lambda: results.append(row_pre_made(args, photos, device)),
        "synthetic": lambda: results.append(synthetic(args, device)),
        "nodeflow": lambda: nodeflow("nodeflow", "none", "auto", args.arch, args.size, "throughput", False),
        "head-only, no cache": lambda: nodeflow("head-only, no cache", "backbone", "off", args.arch, args.size,
                                                "head-off", True),
        "head-only, cache": lambda: nodeflow("head-only, cache", "backbone", "auto", args.arch, args.size, "head-on",
                                             True),
        "fine-tune, no cache": lambda: nodeflow("fine-tune, no cache", "block5", "off", "vgg16", args.vgg_size,
                                                "tune-off", True, lr=1e-3),
        "fine-tune, cache": lambda: nodeflow("fine-tune, cache", "block5", "auto", "vgg16", args.vgg_size, "tune-on",
                                             True, lr=1e-3),
        "fine-tune re-run, cache": lambda: nodeflow("fine-tune re-run, cache", "block5", "auto", "vgg16",
                                                    args.vgg_size, "tune-on", True, lr=2e-3),
    }
    try:
        for name in rows:
            if name not in plan:
                parser.error(f"unknown row '{name}'")
            reset_peak_memory(device)
            plan[name]()
            print_row(results[-1])
    finally:  # the generated photos stay in a --cache-dir for the next run; the runs' workspaces never do
        shutil.rmtree(workspaces if args.cache_dir else base, ignore_errors=True)
    print()
    print_table(results, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": results}, indent=2))
    return 0


COLUMNS = (("row", "{:<26}"), ("first_epoch_s", "{:>9.2f}"), ("later_epoch_s", "{:>9.2f}"),
           ("images_per_s", "{:>9.1f}"), ("train_accuracy", "{:>7.3f}"), ("val_accuracy", "{:>7.3f}"),
           ("peak_rss_mib", "{:>9.0f}"), ("peak_gpu_mib", "{:>9.0f}"))
HEADERS = ("row", "epoch 1 s", "later s", "img/s", "train acc", "val acc", "RSS MiB", "GPU MiB")


def print_row(row: dict) -> None:
    print(f"  {row['row']}: epoch 1 {row['first_epoch_s']:.2f}s, later {row['later_epoch_s']:.2f}s/epoch, "
          f"{row['images_per_s']:.1f} img/s", flush=True)


def print_table(results: list[dict], args, device: torch.device) -> None:
    cols = [(key, fmt, head) for (key, fmt), head in zip(COLUMNS, HEADERS)
            if any(key in r for r in results)]
    print("| " + " | ".join(head for _, _, head in cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in results:
        print("| " + " | ".join(fmt.format(r[key]).strip() if key in r else "" for key, fmt, _ in cols) + " |")
    by = {r["row"]: r for r in results}
    print()

    def ratio(a: str, b: str, key: str = "later_epoch_s") -> float | None:
        return by[a][key] / by[b][key] if a in by and b in by else None

    checks = [
        ("nodeflow / hand-written images/s", _inv(ratio("nodeflow", "hand-written")), ">= 0.97 on GPU; ~1 on CPU"),
        ("nodeflow vs pre-made tensors (slowdown)", ratio("nodeflow", "pre-made tensors"), "<= 1.10"),
        ("head-only epoch speed-up from the cache", ratio("head-only, no cache", "head-only, cache"), ">= 100"),
        ("block5 fine-tune epoch speed-up", ratio("fine-tune, no cache", "fine-tune, cache"), ">= 3"),
        ("block5 fine-tune re-run speed-up (all epochs)",
         _total("fine-tune, no cache", "fine-tune re-run, cache", by), ">= 3"),
        ("synthetic / nodeflow (GPU: nodeflow >= 0.9 of synthetic)", _inv(ratio("nodeflow", "synthetic on device")),
         ">= 0.90"),
    ]
    for label, value, target in checks:
        if value is not None:
            print(f"{label}: {value:.2f} (target {target})")


def _inv(value: float | None) -> float | None:
    return None if value is None else 1 / value


def _total(a: str, b: str, by: dict) -> float | None:
    if a not in by or b not in by:
        return None
    total = lambda r: r["first_epoch_s"] + r["later_epoch_s"] * (r["epochs"] - 1)  # noqa: E731
    return total(by[a]) / total(by[b])


if __name__ == "__main__":
    sys.exit(main())
