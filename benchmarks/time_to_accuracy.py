"""Time to accuracy, DAWNBench style: seconds from a process's start to its first validation score at
or above a target, on a transfer task made here, for three ways of fine-tuning the same weights file.

The task: a torchvision ResNet-18 pretrained on generated shapes (six kinds, see tests/imagegen.py) and
saved with ``torch.save(model.state_dict(), ...)``; the target set is three of those kinds drawn anew
(new colours, places and noise) at 256 px, formatted to 224 px: a few hundred training images and a
validation and a test split. Both are made once into the cache folder and never timed.

Rows, each a process of its own (a fresh workspace for the nodeflow ones, so every cache is filled
inside the timed run):

- hand-written: d2l's fine-tuning recipe in plain torch (``handwritten_finetune.py``): every layer
  trains, the new fc at 10x the learning rate, RandomResizedCrop + flip + normalise;
- nodeflow, as shipped: the hot-dog template with the same weights file and the same settings,
  via ``nodeflow run``;
- nodeflow, the fast way: what a user builds in the editor: a frozen backbone whose features the
  trainer caches for a new head, then a fine-tune node that unfreezes the last block (layer4),
  trained on the cached outputs of the blocks before it; the time to fill the caches included.

Every row stops at the first epoch whose validation accuracy reaches the target (the trainer's
``stop_at_accuracy``) and is scored once on the test split.

    python benchmarks/time_to_accuracy.py [--target 0.75] [--device cpu|cuda|auto] [--quick]
        [--cache-dir DIR] [--json OUT] [--plot OUT.png]

Prints one table and the ratio (best nodeflow seconds / hand-written seconds; the goal is <= 0.5 with a
test accuracy within 2 points). ``--quick`` is the smoke run (32-px images, a few seconds a row).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: the source task's kinds the target set draws anew (tests/imagegen.py)
TARGET_KINDS = ("circle", "square", "triangle")
VAL_LINE = re.compile(r"^\s*(?:(?P<node>\S+)\s+)?val_accuracy=(?P<value>[0-9.]+)")


@dataclass
class Setup:
    """The sizes of one run: the default (224 px on a CPU in under 10 minutes) or ``--quick``."""

    size: int = 224
    per_class: int = 150  # 100 train, 25 validation, 25 test per class
    source_size: int = 64
    source_per_kind: int = 200  # 1,200 pictures, one epoch: under a minute on two cores
    source_epochs: int = 1
    epochs: int = 8  # at most, for every trainer
    batch_size: int = 32
    lr: float = 1e-3  # hand-written and template: every layer at lr, the new fc at 10x
    head_lr: float = 1e-2  # the fast way's head on cached features
    tune_lr: float = 1e-3  # ... and its layer4 after that


QUICK = Setup(size=32, per_class=30, source_size=32, source_per_kind=60, source_epochs=1, epochs=3, batch_size=16)


@dataclass
class Row:
    name: str
    seconds_to_target: float | None = None
    reached: bool = False
    test_accuracy: float | None = None
    seconds_total: float = 0.0
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, validation accuracy)

    def to_json(self) -> dict:
        return {"name": self.name, "seconds_to_target": self.seconds_to_target, "reached": self.reached,
                "test_accuracy": self.test_accuracy, "seconds_total": self.seconds_total,
                "curve": [list(point) for point in self.curve]}


# -- the task (made once, never timed) ------------------------------------------------------------


def pretrained_weights(cache: Path, setup: Setup, seed: int = 0) -> Path:
    """A torchvision resnet18 trained on the six generated kinds, saved as its users save one."""
    import numpy as np
    import torch
    import torchvision

    from tests.imagegen import KINDS, draw

    path = cache / f"resnet18_shapes_{setup.source_size}px_{setup.source_per_kind}x{setup.source_epochs}.pth"
    if path.is_file():
        return path
    rng = random.Random(seed + 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images, labels = [], []
    for _ in range(setup.source_per_kind):
        for label, kind in enumerate(KINDS):
            picture = np.asarray(draw(kind, setup.source_size, rng), dtype=np.float32) / 255
            images.append((torch.from_numpy(picture).permute(2, 0, 1) - mean) / std)
            labels.append(label)
    images, labels = torch.stack(images), torch.tensor(labels)
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=len(KINDS))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(setup.source_epochs):
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + epoch))
        for batch in order.split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(model.state_dict(), partial)
    partial.replace(path)
    return path


def target_set(cache: Path, setup: Setup) -> Path:
    """Three of the source's kinds drawn anew at 8/7 of the input size (resized and cropped as usual)."""
    from tests.imagegen import make_image_set

    root = cache / f"shapes3_{setup.size}px_{setup.per_class}"
    if (root / ".complete").is_file():
        return root
    make_image_set(root, TARGET_KINDS, per_class=setup.per_class, size=setup.size * 8 // 7, seed=7,
                   fractions=(2 / 3, 1 / 6, 1 / 6))
    (root / ".complete").write_text("ok")
    return root


# -- the rows -------------------------------------------------------------------------------------


def timed(name: str, command: list[str], target: float, env: dict[str, str] | None = None) -> tuple[Row, str]:
    """Run ``command`` as a new process; every validation score it prints is stamped with the
    seconds since the process started."""
    row = Row(name)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})})
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        now = time.perf_counter() - start
        lines.append(line)
        found = VAL_LINE.match(line)
        if found:
            accuracy = float(found["value"])
            row.curve.append((now, accuracy))
            if not row.reached and accuracy >= target:
                row.reached, row.seconds_to_target = True, now
    process.wait()
    row.seconds_total = time.perf_counter() - start
    output = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(f"row '{name}' failed (exit {process.returncode}):\n{output[-3000:]}")
    return row, output


def hand_written(data: Path, weights: Path, setup: Setup, target: float, device: str) -> Row:
    row, output = timed("hand-written (d2l recipe, plain torch)",
                        [sys.executable, str(ROOT / "benchmarks" / "handwritten_finetune.py"), str(data), str(weights),
                         "--target", str(target), "--epochs", str(setup.epochs), "--lr", str(setup.lr),
                         "--batch-size", str(setup.batch_size), "--size", str(setup.size), "--device", device],
                        target)
    row.test_accuracy = float(re.search(r"test_accuracy=([0-9.]+)", output)[1])
    return row


def nodeflow_run(name: str, slug: str, graph: str, settings: dict, evaluations: dict[str, str], work: Path,
                 target: float, device: str) -> Row:
    """``nodeflow run`` in a fresh workspace; the test score is that of the evaluate node after
    the trainer that reached the target first (``evaluations``: trainer -> its evaluate node; the
    run goes as far as the last of those)."""
    workspace = work / slug
    report = work / f"{slug}.report.json"
    command = [sys.executable, "-m", "nodeflow.cli", "run", graph, "--workspace", str(workspace), "--device", device,
               "--report", str(report), *(["--target", *evaluations.values()] if len(evaluations) == 1 else [])]
    for key, value in settings.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    row, output = timed(name, command, target)
    reached_by = next((m["node"] for line in output.splitlines() if (m := VAL_LINE.match(line))
                       and float(m["value"]) >= target), None) or list(evaluations)[-1]
    nodes = json.loads(report.read_text())["nodes"]
    row.test_accuracy = nodes[evaluations[reached_by]]["metrics"]["accuracy"]
    return row


def sized(setup: Setup) -> dict:
    return {"input.height": setup.size, "input.width": setup.size, "formatter.height": setup.size,
            "formatter.width": setup.size, "formatter.resize_to": setup.size * 8 // 7}


def as_shipped(data: Path, weights: Path, setup: Setup, target: float, device: str, work: Path) -> Row:
    """The hot-dog template: the recipe above as nodes (its from-scratch twin is not run)."""
    settings = {**sized(setup), "dataset.root": str(data), "resnet18_ft.weights": str(weights),
                "train_ft.lr": setup.lr, "train_ft.batch_size": setup.batch_size, "train_ft.epochs": setup.epochs,
                "train_ft.stop_at_accuracy": target}
    return nodeflow_run("nodeflow, as shipped (hot-dog template)", "template", "hotdog_resnet18_finetune",
                        settings, {"train_ft": "evaluate_ft"}, work, target, device)


def fast_graph(path: Path) -> Path:
    """The fast way as a graph file, as the editor saves it: data, a frozen ResNet-18 with a new fc,
    a trainer on its cached features, a fine-tune node unfreezing layer4, a second trainer, and an
    evaluate node after each trainer."""
    def node(id_: str, type_: str, x: float, y: float, **params) -> dict:
        return {"id": id_, "type": type_, "params": params, "position": {"x": x, "y": y}}

    def edge(a: str, b: str, port: str = "model", into: str | None = None) -> dict:
        return {"source": a, "source_port": port, "target": b, "target_port": into or port}

    nodes = [node("dataset", "data.image_folder", 0, 400, root=""),
             node("formatter", "data.format", 240, 400, height=224, width=224, resize="shorter_side", resize_to=256,
                  crop="center", normalize="imagenet"),
             node("input", "model.input", 0, 0, height=224, width=224, channels=3),
             node("backbone", "model.backbone", 240, 0, arch="resnet18", weights="imagenet", feature_extractor=True),
             node("pool", "model.global_pool", 480, 0, name="pool", mode="avg"),
             node("fc", "model.dense", 720, 0, name="fc", units="auto", activation="none", init="xavier_uniform"),
             node("train_head", "train.trainer", 960, 0, optimizer="sgd", momentum=0.9, feature_cache="auto"),
             node("unfreeze", "train.finetune", 1200, 0, unfreeze=["layer4"]),
             node("train_layer4", "train.trainer", 1440, 0, optimizer="sgd", momentum=0.9, feature_cache="auto"),
             node("evaluate_head", "eval.evaluate", 1200, 400, split="test"),
             node("evaluate_layer4", "eval.evaluate", 1680, 400, split="test")]
    edges = [edge("dataset", "formatter", "data"), edge("input", "backbone"), edge("backbone", "pool"),
             edge("pool", "fc"), edge("fc", "train_head"), edge("formatter", "train_head", "data"),
             edge("train_head", "unfreeze"), edge("unfreeze", "train_layer4"),
             edge("formatter", "train_layer4", "data"), edge("train_head", "evaluate_head"),
             edge("formatter", "evaluate_head", "data"), edge("train_layer4", "evaluate_layer4"),
             edge("formatter", "evaluate_layer4", "data")]
    graph = {"format": "nodeflow.graph", "version": 2, "name": "ResNet-18: head on cached features, then layer4",
             "nodes": nodes, "edges": edges}
    path.write_text(json.dumps(graph, indent=1))
    return path


def fast_way(data: Path, weights: Path, setup: Setup, target: float, device: str, work: Path) -> Row:
    settings = {**sized(setup), "dataset.root": str(data), "backbone.weights": str(weights)}
    for trainer, lr in (("train_head", setup.head_lr), ("train_layer4", setup.tune_lr)):
        settings |= {f"{trainer}.lr": lr, f"{trainer}.batch_size": setup.batch_size,
                     f"{trainer}.stop_at_accuracy": target,
                     f"{trainer}.epochs": setup.epochs * (4 if trainer == "train_head" else 1)}
    graph = str(fast_graph(work / "fast.json"))
    return nodeflow_run("nodeflow, the fast way (cached head, then layer4)", "fast", graph, settings,
                        {"train_head": "evaluate_head", "train_layer4": "evaluate_layer4"}, work, target, device)


# -- the report -----------------------------------------------------------------------------------


def ratio(rows: list[Row]) -> float | None:
    """Best nodeflow seconds to the target over the hand-written seconds (None unless both reached it)."""
    hand, ours = rows[0], [r for r in rows[1:] if r.reached]
    if not hand.reached or not ours:
        return None
    return min(r.seconds_to_target for r in ours) / hand.seconds_to_target


def print_table(rows: list[Row], target: float) -> None:
    print(f"| row | seconds to {target:g} val. accuracy | test accuracy | process seconds |")
    print("|---|---|---|---|")
    for r in rows:
        best = max((a for _, a in r.curve), default=0.0)
        seconds = f"{r.seconds_to_target:.1f}" if r.reached else f"not reached (best {best:.3f})"
        test = f"{r.test_accuracy:.3f}" if r.test_accuracy is not None else "-"
        print(f"| {r.name} | {seconds} | {test} | {r.seconds_total:.1f} |")


def plot(rows: list[Row], target: float, path: Path) -> None:
    """Validation accuracy against seconds since the process started, a line per row: with
    matplotlib when it is installed, else the engine's own PIL chart."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from nodes.engine.plots import line_plot_png

        path.write_bytes(line_plot_png({r.name: [(0.0, 0.0), *r.curve] for r in rows},
                                       title=f"validation accuracy vs seconds (target {target:g})", size=(720, 400)))
        return
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        axes.plot([0.0, *(t for t, _ in r.curve)], [0.0, *(a for _, a in r.curve)], marker="o", label=r.name)
    axes.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    axes.set_xlabel("seconds since the process started")
    axes.set_ylabel("validation accuracy")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


ROWS = {"hand-written": hand_written, "as shipped": as_shipped, "fast": fast_way}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=None, help="validation accuracy to reach (default 0.75; "
                                                                   "--quick: 0.6)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="smoke run: 32-px images, a few seconds a row")
    parser.add_argument("--cache-dir", default=None, help="where the weights file and the images are kept "
                                                          "(default: a folder in the system's temp dir)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--plot", default=None, metavar="OUT.png", help="validation accuracy against seconds, "
                                                                       "a line per row (default: beside --json)")
    parser.add_argument("--epochs", type=int, default=None, help="at most this many epochs a trainer (default 8; "
                                                                    "the fast way's head: 4 times as many)")
    parser.add_argument("--rows", nargs="*", choices=list(ROWS), default=list(ROWS))
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else Setup()
    if args.epochs:
        setup = dataclasses.replace(setup, epochs=args.epochs)
    target = args.target if args.target is not None else 0.6 if args.quick else 0.75
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.gettempdir()) / "nodeflow-time-to-accuracy"
    weights = pretrained_weights(cache, setup)
    data = target_set(cache, setup)
    counts = {split: sum(1 for _ in (data / split).rglob("*.jpg")) for split in ("train", "validation", "test")}
    print(f"# {counts['train']} training, {counts['validation']} validation, {counts['test']} test images of "
          f"{len(TARGET_KINDS)} kinds at {setup.size} px; weights pretrained on the six kinds at "
          f"{setup.source_size} px")
    print(f"# {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch "
          f"{torch.__version__}, device {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
          + f", load average {os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nodeflow-tta-") as scratch:  # the runs' workspaces
        work = Path(scratch)
        for key in args.rows:
            row = ROWS[key](data, weights, setup, target, device) if key == "hand-written" else \
                ROWS[key](data, weights, setup, target, device, work)
            rows.append(row)
            reached = f"{row.seconds_to_target:.1f}s to {target:g}" if row.reached else f"did not reach {target:g}"
            print(f"  {row.name}: {reached}, test accuracy {row.test_accuracy:.3f}", flush=True)
    print()
    print_table(rows, target)
    found = ratio(rows) if args.rows[0] == "hand-written" else None
    if found is not None:
        print(f"\nbest nodeflow / hand-written seconds to the target: {found:.2f} (goal <= 0.5, test accuracy within "
              "2 points)")
    if args.json:
        Path(args.json).write_text(json.dumps({"target": target, "device": device, "rows": [r.to_json() for r in rows],
                                               "ratio": found}, indent=2))
    picture = Path(args.plot) if args.plot else Path(args.json).with_suffix(".png") if args.json else None
    if picture is not None:
        plot(rows, target, picture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
