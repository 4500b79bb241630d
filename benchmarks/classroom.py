"""A class on one server: 30 simulated users, HTTP clients on loopback against a real
``serve --users`` server (a subprocess, the test node pack as its catalogue, a worker process per
running job as in a real class), each opening a project of their own and starting a short run
(a node that takes ``--run-seconds``). One of them is greedy and queues ``--greedy`` more runs
first. While the runs go, every user polls ``GET /api/p/ID/status`` as the editor's page would.

Prints the latency of those polls (p50, p95, max; target p95 < 200 ms) and the order in which the
runs started, by user: round-robin by user, so the greedy user's extra runs start only after
everyone else's first one. Bounded in time (``--seconds``); each user signs in with an API token.

    python benchmarks/classroom.py [--users 30] [--greedy 3] [--seconds 240] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from nodeflow.users import Accounts  # noqa: E402
from tests.ui.classroom_server import CHEAP  # noqa: E402

#: how often each user's page asks for the status while a run goes (the editor polls more often, but
#: only when something changed does it ask the session; a script polling is the heavier case)
POLL_SECONDS = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_run(seconds: float) -> dict:
    steps = max(1, int(seconds / 0.05))
    return {"format": "nodeflow.graph", "version": 1, "name": "short run", "edges": [
        {"source": "c", "source_port": "value", "target": "slow", "target_port": "value"}], "nodes": [
        {"id": "c", "type": "test.constant", "params": {"value": 1}},
        {"id": "slow", "type": "test.slow", "params": {"steps": steps, "delay": 0.05}}]}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}
    return {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max_ms": round(1000 * ordered[-1], 1)}


class Server:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (root / "server.log").open("w")
        # without a test runner's variables: NiceGUI would take itself for a test's screen
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "NICEGUI"))}
        env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.ui.classroom_server", "--port", str(self.port),
                                      "--workspace", str(root / "server")], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/api/me", timeout=2).status_code == 401:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def user(name: str, token: str, url: str, runs: int, graph: dict, together: asyncio.Barrier, first: bool,
               polls: list[tuple[float, float]], deadline: float) -> dict:
    """One person: a project, its graph, ``runs`` runs asked for (the ``first`` before everyone else,
    the others all at once), then status polls until they are done."""
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
        project = (await client.post("/api/projects", json={"title": f"{name}'s project"})).json()["id"]
        assert (await client.put(f"/api/p/{project}/graph", json=graph)).status_code == 200

        async def ask() -> None:
            for _ in range(runs):
                answer = await client.post(f"/api/p/{project}/run", json={})
                assert answer.status_code == 200, answer.text

        if first:
            await ask()
        await together.wait()
        if not first:
            await ask()
        while time.monotonic() < deadline:
            began = time.perf_counter()
            status = await client.get(f"/api/p/{project}/status")
            polls.append((time.monotonic(), time.perf_counter() - began))
            assert status.status_code == 200, status.text
            done = [r for r in (await client.get(f"/api/p/{project}/runs")).json()
                    if r["status"] not in ("queued", "running")]
            if len(done) == runs:
                break
            await asyncio.sleep(POLL_SECONDS)
        runs_now = (await client.get(f"/api/p/{project}/runs")).json()
        return {"user": name, "runs": [(r["id"], r["status"], r["started"]) for r in runs_now]}


async def classroom(url: str, tokens: dict[str, str], greedy: int, run_seconds: float, seconds: float) -> dict:
    polls: list[tuple[float, float]] = []
    deadline = time.monotonic() + seconds
    graph = short_run(run_seconds)
    names = sorted(tokens)
    together = asyncio.Barrier(len(names) + 1)  # every project made (and the greedy user's runs asked for)
    tasks = [asyncio.create_task(user(n, tokens[n], url, 1 + (greedy if i == 0 else 0), graph, together, i == 0,
                                      polls, deadline)) for i, n in enumerate(names)]
    await together.wait()
    began = time.monotonic()
    results = await asyncio.gather(*tasks)
    ended = time.monotonic()
    starts = sorted((started, r["user"], run_id) for r in results for run_id, status, started in r["runs"] if started)
    unfinished = [(r["user"], run_id, status) for r in results for run_id, status, _ in r["runs"]
                  if status not in ("done", "cached")]
    while_running = [latency for when, latency in polls if began <= when <= ended]
    return {"users": len(names), "greedy_extra_runs": greedy, "run_seconds": run_seconds,
            "wall_seconds": round(ended - began, 1), "status_latency_while_running": percentiles(while_running),
            "start_order": [f"{name}#{run_id}" for _, name, run_id in starts], "unfinished": unfinished}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--greedy", type=int, default=3, help="extra runs the first user queues")
    parser.add_argument("--run-seconds", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=240.0, help="give up after this long")
    parser.add_argument("--quick", action="store_true", help="4 users, to check that it runs")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.users, args.greedy, args.run_seconds, args.seconds = 4, 2, 0.2, 90.0
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        accounts = Accounts(root / "server", hasher=CHEAP)
        tokens = {}
        for i in range(args.users):
            name = f"student{i:02d}"
            accounts.add(name, f"{name}-password")
            tokens[name] = accounts.create_token(name, "benchmark")[1]
        accounts.close()
        server = Server(root)
        try:
            figures = asyncio.run(classroom(server.url, tokens, args.greedy, args.run_seconds, args.seconds))
        finally:
            server.stop()
    figures["machine"] = f"{os.cpu_count()} CPU cores; clients and server on the same machine"
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
