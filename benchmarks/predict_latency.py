"""How long trying a trained model takes once it is loaded: a ResNet-18 at 224×224 px, trained for one
short epoch on generated pictures, then asked to classify one picture at a time with its Grad-CAM
overlay, on the CPU, through the same :class:`nodeflow.trying.Tryer` as ``POST
/api/models/{node}/predict`` and the Try it tab (the header check here, the model in its own process).

Prints the first request's time (it loads the model), then p50, p95 and the maximum of the next
``--requests`` (target p95 <= 300 ms), with and without the overlay; then the same work done in the
benchmark's own process with no request around it, which says what the machine allows at the moment
(on a shared machine the two move together) and, by difference, what a request adds.

    python benchmarks/predict_latency.py [--requests 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from nodeflow.executor import Executor  # noqa: E402
from nodeflow.node import Registry  # noqa: E402
from nodeflow.trying import Picture, Tryer  # noqa: E402
from tests.imagegen import make_image_set  # noqa: E402
from tests.nodes.graphs import classifier_graph  # noqa: E402

SIZE = 224
TARGET_P95_MS = 300


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="timed requests after the first (default 40)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nodeflow-predict-bench-") as folder:
        base = Path(folder)
        root = make_image_set(base / "images", per_class=5, size=SIZE, fmt="jpg", seed=1)
        graph = classifier_graph(root, size=SIZE, epochs=1, lr=1e-3, trainer={"batch_size": 4})
        executor = Executor(Registry.discover(plugins=False), base / "workspace", device="cpu")
        started = time.perf_counter()
        report = executor.run(graph, target="train")
        if report.failure() is not None:
            print(f"training failed: {report.failure()}", file=sys.stderr)
            return 1
        trained = time.perf_counter() - started
        buffer = io.BytesIO()
        Image.open(next((root / "test").rglob("*.jpg"))).resize((640, 480)).save(buffer, format="JPEG")
        picture = [Picture("photo.jpg", buffer.getvalue())]
        tryer = Tryer(executor)
        try:
            first = time.perf_counter()
            tryer.predict(graph, "train", picture, overlay=True)
            first_ms = (time.perf_counter() - first) * 1000
            figures = {"first_request_ms": round(first_ms, 1), "training_s": round(trained, 1),
                       "requests": args.requests, "image": "640x480 JPEG", "model": f"resnet18 at {SIZE} px, cpu"}
            for overlay in (True, False):
                times = []
                for _ in range(args.requests):
                    begin = time.perf_counter()
                    tryer.predict(graph, "train", picture, overlay=overlay)
                    times.append((time.perf_counter() - begin) * 1000)
                name = "with_overlay" if overlay else "without_overlay"
                figures[name] = {"p50_ms": round(statistics.median(times), 1),
                                 "p95_ms": round(percentile(times, 0.95), 1), "max_ms": round(max(times), 1)}
            # the same work in this process, without the request around it: what the machine allows now
            from nodes.engine.trying import Predictor

            model = executor.cache.get(executor.keys(graph)["train"], executor.registry.get("train.trainer"))[0]
            predictor = Predictor(model["model"], "cpu")
            image = Image.open(io.BytesIO(picture[0].data))
            predictor.predict([image], overlay=True)
            for overlay in (True, False):
                times = []
                for _ in range(args.requests):
                    begin = time.perf_counter()
                    predictor.predict([image], overlay=overlay)
                    times.append((time.perf_counter() - begin) * 1000)
                name = "bare_" + ("with_overlay" if overlay else "without_overlay")
                figures[name] = {"p50_ms": round(statistics.median(times), 1),
                                 "p95_ms": round(percentile(times, 0.95), 1), "max_ms": round(max(times), 1)}
        finally:
            tryer.close()
    print(f"model: ResNet-18 at {SIZE} px on the CPU; picture: 640×480 JPEG; trained in {figures['training_s']} s")
    print(f"first request (loads the model): {figures['first_request_ms']:.0f} ms")
    for name in ("with_overlay", "without_overlay"):
        f = figures[name]
        print(f"{name.replace('_', ' ')}: p50 {f['p50_ms']:.0f} ms, p95 {f['p95_ms']:.0f} ms, max {f['max_ms']:.0f} ms "
              f"({args.requests} requests)")
    for name in ("with_overlay", "without_overlay"):
        f = figures["bare_" + name]
        print(f"the same in one process, no request around it, {name.replace('_', ' ')}: p50 {f['p50_ms']:.0f} ms, "
              f"p95 {f['p95_ms']:.0f} ms")
    ok = figures["with_overlay"]["p95_ms"] <= TARGET_P95_MS
    print(f"target p95 <= {TARGET_P95_MS} ms with the overlay: {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
