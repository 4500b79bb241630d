"""How long Stop takes to take effect during a VGG16 fine-tune (block5 and the head train, blocks
1-4 frozen), measured through the executor as the editor uses it: the stop flag is set at a random
moment after training has started, and the time until the run has ended (the node reported
interrupted, the worker is free again) is the latency.

    python benchmarks/stop_latency.py [--device cpu|cuda|auto] [--stops 10] [--size 150] [--batch-size 20]
        [--feature-cache off|auto] [--json out.json]

Prints each stop's latency and their p50 / p95. With ``--feature-cache off`` (the default) every
step runs all of VGG16, the slow case; ``auto`` trains block5 on cached block1-4 outputs, and a stop
may then land in the cache build. Not a timed test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import graph_json, make_photos  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def one_stop(executor, graph, rng: random.Random, batches: list[float]) -> float:
    """Start training, wait until a random moment after its first batch, stop, and time the end."""
    from nodeflow.graph import Graph

    batches.clear()
    done = threading.Event()
    result: dict = {}

    def run() -> None:
        result["report"] = executor.run(Graph.from_data(graph), target="train", force=["train"])
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while not batches and not done.is_set():
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 3.0))  # anywhere in a step: forward, backward, optimizer, evaluation
    pressed = time.perf_counter()
    executor.interrupt()
    done.wait()
    latency = time.perf_counter() - pressed
    worker.join()
    if not result["report"].interrupted:
        raise RuntimeError("the run ended before the stop: use more epochs or images")
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stops", type=int, default=10)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--feature-cache", default="off", choices=["off", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()

    import torch

    from nodeflow.executor import Executor
    from nodeflow.node import Registry

    base = Path(tempfile.gettempdir()) / "nodeflow-stop-bench"
    photos = make_photos(base / f"photos-{args.images}", args.images, validation=0.2)
    graph = graph_json(photos, "vgg16", args.size, args.batch_size, epochs=1000, lr=1e-3, frozen="block5",
                       feature_cache=args.feature_cache, workers=0, compile=False)
    batches: list[float] = []

    def listen(event) -> None:
        if event.node_id == "train" and event.kind == "metric" and event.data["name"] == "batch_loss":
            batches.append(time.perf_counter())

    executor = Executor(Registry.discover(plugins=False), base / "workspace", device=args.device, listeners=[listen])
    rng = random.Random(args.seed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# VGG16 fine-tune (block5 + head), {args.size}px, batch {args.batch_size}, feature cache "
          f"{args.feature_cache}, device {args.device}, {torch.get_num_threads()} threads, "
          f"load average {load:.1f} at start", flush=True)
    latencies = []
    step_times = []
    for i in range(args.stops):
        latency = one_stop(executor, graph, rng, batches)
        latencies.append(latency)
        step_times += [b - a for a, b in zip(batches, batches[1:])]
        print(f"  stop {i + 1}: {latency:.2f} s", flush=True)
    step = statistics.median(step_times) if step_times else float("nan")
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    steps = f" (one training step takes {step:.2f} s)" if step_times else ""
    print(f"stop latency over {len(latencies)} stops: p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s"
          + steps)
    if args.json:
        Path(args.json).write_text(json.dumps({"latencies": latencies, "p50": p50, "p95": p95, "step": step,
                                               "load": load, **vars(args)}, indent=2))


if __name__ == "__main__":
    main()
