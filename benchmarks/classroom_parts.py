"""What the parts of multi-user mode cost on this machine, before a server puts them together:

- a sign-in: one Argon2id hash check with argon2-cffi's default parameters;
- the gate in front of every request: an API call signed in by cookie or by token, against the
  same call with no gate (in-process over ASGI, so the figures are the gate's own cost);
- a disk-quota measurement of a user folder of many files (what the quota's cache saves);
- an upload: a zip of small JPEGs unpacked, each image decoded;
- the fair queue: 30 users with 10 runs waiting each, positions and pops;
- a job's process: how long until a new one has torch and the engine ready, and the memory four of them
  hold together (proportional set size; the fork server's own counted in), started from the fork server
  (nodeflow.worker.start_child) against a fresh interpreter each (multiprocessing's spawn, how they started
  before).

    python benchmarks/classroom_parts.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402
from fastapi import Depends, FastAPI  # noqa: E402

from nodeflow.fairqueue import FairQueue  # noqa: E402
from nodeflow.uploads import receive_zip  # noqa: E402
from nodeflow.users import Accounts, User  # noqa: E402
from nodeflow.users.login import COOKIE, current_user, install_login  # noqa: E402
from nodeflow.users.quota import folder_bytes  # noqa: E402
from tests.imagegen import draw  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 3),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)}


def sign_in_cost(repeats: int) -> dict[str, float]:
    hasher = PasswordHasher()
    stored = hasher.hash("a-password")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        hasher.verify(stored, "a-password")
        times.append(time.perf_counter() - start)
    return {**percentiles(times), "params": stored.split("$")[3]}


async def gate_cost(root: Path, requests: int) -> dict[str, dict[str, float]]:
    accounts = Accounts(root, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    alice = accounts.add("alice", "alice-pass")
    _, token = accounts.create_token("alice", "bench")
    cookie = None
    apps = {}
    for gated in (False, True):
        app = FastAPI()
        if gated:
            login = install_login(app, accounts)
            cookie = login.signer.dumps(accounts.start_session(alice))

            @app.get("/api/status")
            def status(user: User = Depends(current_user)):
                return {"user": user.name}
        else:
            @app.get("/api/status")
            def status():
                return {"user": "anyone"}
        apps[gated] = app
    kinds = {"no gate": (apps[False], {}), "cookie": (apps[True], {"cookie": f"{COOKIE}={cookie}"}),
             "token": (apps[True], {"authorization": f"Bearer {token}"})}
    clients = {label: httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bench")
               for label, (app, _) in kinds.items()}
    times: dict[str, list[float]] = {label: [] for label in kinds}
    for _ in range(requests):  # the three kinds in turn, so a busy moment of the machine hits them alike
        for label, (_, headers) in kinds.items():
            start = time.perf_counter()
            response = await clients[label].get("/api/status", headers=headers)
            times[label].append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
    for client in clients.values():
        await client.aclose()
    accounts.close()
    return {label: percentiles(samples) for label, samples in times.items()}


def quota_cost(root: Path, files: int) -> dict[str, float]:
    folder = root / "users" / "alice" / "projects" / "p" / "cache"
    for i in range(files):
        sub = folder / f"{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.bin").write_bytes(b"x" * 100)
    start = time.perf_counter()
    total = folder_bytes(root / "users" / "alice")
    return {"files": files, "bytes": total, "seconds": round(time.perf_counter() - start, 4)}


def upload_cost(root: Path, images: int) -> dict[str, float]:
    rng = random.Random(0)
    root.mkdir(parents=True)
    source = root / "upload.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(images):
            buffer = io.BytesIO()
            draw(("circle", "stripes")[i % 2], 64, rng).save(buffer, "JPEG")
            archive.writestr(f"set/{('circle', 'stripes')[i % 2]}/{i}.jpg", buffer.getvalue())
    start = time.perf_counter()
    summary = receive_zip(source, root / "data", "upload")
    seconds = time.perf_counter() - start
    return {"images": summary.images, "bytes": summary.bytes, "seconds": round(seconds, 3),
            "images_per_second": round(summary.images / seconds, 1)}


def queue_cost(users: int, per_user: int) -> dict[str, float]:
    queue = FairQueue(per_user=per_user)
    start = time.perf_counter()
    for i in range(per_user):
        for u in range(users):
            queue.push(f"user{u}", (u, i))
    pushed = time.perf_counter() - start
    queue.pop_next()  # a change, so the snapshot below works the order out afresh
    start = time.perf_counter()
    snapshot = queue.snapshot()
    snap = time.perf_counter() - start
    start = time.perf_counter()
    while queue.pop_next() is not None:
        pass
    popped = time.perf_counter() - start
    n = users * per_user
    return {"runs": n, "push_ms_each": round(1000 * pushed / n, 3), "snapshot_ms": round(1000 * snap, 3),
            "pop_ms_each": round(1000 * popped / n, 4), "first_three": [w.user for w in snapshot[:3]]}


def _ready(conn) -> None:
    """A job process's start: the imports every run makes, then wait to be let go."""
    import importlib

    for name in ("torch", "torchvision", "nodes.engine.models", "nodes.engine.fit"):
        importlib.import_module(name)
    conn.send("ready")
    conn.recv()


def _pss(pid: int) -> int:
    """Bytes of the process's proportional set size: pages shared with others counted in part."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def job_process_cost(count: int) -> dict[str, dict[str, float]]:
    import multiprocessing as mp

    from nodeflow.worker import start_child

    def fresh(target, name):
        spawn = mp.get_context("spawn")
        parent, child = spawn.Pipe()
        process = spawn.Process(target=target, name=name, daemon=True, args=(child,))
        process.start()
        child.close()
        return process, parent

    found = {}
    for way, start in (("spawn", fresh), ("fork server", start_child)):
        seconds, held = [], []
        for _ in range(count):
            began = time.perf_counter()
            process, conn = start(_ready, "nodeflow-bench-job")
            assert conn.recv() == "ready"
            seconds.append(time.perf_counter() - began)
            held.append((process, conn))
        pids = [process.pid for process, _ in held]
        if way == "fork server":  # the server holds what its children share: counted too
            import multiprocessing.forkserver as forkserver
            pids.append(forkserver._forkserver._forkserver_pid)
        memory = sum(_pss(pid) for pid in pids)
        for process, conn in held:
            conn.send("exit")
            process.join(10)
        found[way] = {"first_s": round(seconds[0], 2), "later_median_s": round(statistics.median(seconds[1:]), 2),
                      "processes": count, "pss_total_mb": round(memory / 2**20)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that it runs")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        figures = {
            "sign_in_argon2_default": sign_in_cost(2 if args.quick else 10),
            "gate_per_request": asyncio.run(gate_cost(root / "gate", 20 if args.quick else 500)),
            "quota_measure": quota_cost(root / "quota", 200 if args.quick else 20_000),
            "upload_zip": upload_cost(root / "upload", 20 if args.quick else 1000),
            "fair_queue_30_users": queue_cost(30, 2 if args.quick else 10),
            "job_process_ready_with_torch": job_process_cost(2 if args.quick else 4),
        }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
