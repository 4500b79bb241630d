"""Scaling out on a Dask cluster, measured on this machine:

- the hot-dog template's twins (fine-tune and scratch ResNet-18, weights none) on a small generated
  set, run with ``--jobs 1`` and ``--jobs 2`` (fresh workspaces): wall time, the speed-up, and the
  threads each worker process gets;
- a 2x2 sweep of the cats-vs-dogs fine-tune template (unfrozen blocks x learning rate): how many
  node executions it took, against 4x the executions of one run.

    python benchmarks/scale_out.py [--images 60] [--size 64] [--epochs 2] [--json out.json]

Each figure comes from the command line as a user runs it (``nodeflow run/sweep --report``), so
the wall times include starting the local cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodeflow.parallel import threads_per_worker  # noqa: E402
from tests.imagegen import make_image_set  # noqa: E402


def sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]


def nodeflow(*args: str) -> tuple[float, dict]:
    """Run the CLI; returns the wall time and the --report it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nodeflow.cli", "--no-plugins", *args, "--report", str(report),
                               "--quiet", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"nodeflow {' '.join(args[:3])} failed: {done.stderr[-2000:]}")
        return wall, json.loads(report.read_text())


def torch_threads(jobs: int) -> list[int]:
    """What torch in each worker process of ``--jobs N`` uses."""
    from nodeflow.parallel import DaskBackend

    def count() -> int:
        import torch

        return torch.get_num_threads()

    with DaskBackend(jobs=jobs) as dispatcher:
        return sorted(dispatcher.client.run(count).values())


def ran(nodes: dict) -> int:
    return sum(n["status"] == "ran" for n in nodes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="images per class")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    figures: dict = {"cores": cores}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_image_set(tmp / "data", ("circle", "stripes"), per_class=args.images, size=args.size + 4,
                              vary_size=True, class_names=("cat", "dog"))
        s = args.size
        hotdog = sets({"dataset.root": str(data), "input.height": s, "input.width": s, "formatter.height": s,
                       "formatter.width": s, "formatter.resize_to": s + 4, "resnet18_ft.weights": "none",
                       "train_ft.epochs": args.epochs, "train_sc.epochs": args.epochs, "train_ft.batch_size": 16,
                       "train_sc.batch_size": 16})
        print(f"hot-dog twins, {2 * args.images} images of {s}px, {args.epochs} epochs, {cores} cores")
        for jobs in (1, 2):
            figures[f"torch_threads_jobs{jobs}"] = torch_threads(jobs)
            print(f"  --jobs {jobs}: torch threads in each worker: {figures[f'torch_threads_jobs{jobs}']}")
        twins = {}
        for jobs in (1, 2):
            wall, report = nodeflow("run", "hotdog_resnet18_finetune", *hotdog, "--jobs", str(jobs),
                                    "--workspace", str(tmp / f"ws-jobs{jobs}"))
            assert report["ok"], report
            train = {n: report["nodes"][n]["seconds"] for n in ("train_ft", "train_sc")}
            twins[jobs] = {"wall_s": round(wall, 2), "threads_per_worker": threads_per_worker(jobs, cores),
                           "train_s": train, "executions": ran(report["nodes"])}
            print(f"  --jobs {jobs}: {wall:6.1f} s wall, {threads_per_worker(jobs, cores)} thread(s) per worker, "
                  f"train_ft {train['train_ft']:.1f} s, train_sc {train['train_sc']:.1f} s")
        speedup = twins[1]["wall_s"] / twins[2]["wall_s"]
        print(f"  speed-up of --jobs 2 over --jobs 1: {speedup:.2f}x")
        figures["twins"] = {**{f"jobs{j}": v for j, v in twins.items()}, "speedup": round(speedup, 2)}

        cats = sets({"dataset.root": str(data), "input.height": 32, "input.width": 32, "formatter.height": 32,
                     "formatter.width": 32, "vgg16.weights": "none", "dense.units": 16, "train.epochs": args.epochs,
                     "train.batch_size": 16, "train_finetuned.epochs": 1, "train_finetuned.batch_size": 16})
        grid = ["--grid", 'finetune.unfreeze=[["block5"],["block4","block5"]]', "--grid", "train_finetuned.lr=[1e-5,1e-4]"]
        _, single = nodeflow("run", "cats_vs_dogs_finetune", *cats, "--workspace", str(tmp / "ws-single"))
        wall, sweep = nodeflow("sweep", "cats_vs_dogs_finetune", *cats, *grid, "--jobs", "2",
                               "--workspace", str(tmp / "ws-sweep"))
        assert all(b["ok"] for b in sweep["branches"]), sweep
        one = ran(single["nodes"])
        took = sum(ran(b["nodes"]) for b in sweep["branches"])
        print(f"2x2 sweep of cats_vs_dogs_finetune (--jobs 2): {took} node executions against 4 x {one} = "
              f"{4 * one} for four separate runs ({wall:.1f} s wall)")
        per_node = {n: sum(b["nodes"][n]["status"] == "ran" for b in sweep["branches"]) for n in single["nodes"]}
        print("  executions per node: " + ", ".join(f"{n} {c}" for n, c in per_node.items()))
        figures["sweep"] = {"executions": took, "single_run": one, "four_runs": 4 * one, "wall_s": round(wall, 2),
                            "per_node": per_node}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
