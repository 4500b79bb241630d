"""A Dask cluster started by hand (``dask scheduler`` + ``dask worker``), used with ``--scheduler``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import make_graph

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
PACK = str(ROOT / "tests" / "nodepack.py")
GPU_NODES = str(Path(__file__).with_name("gpu_nodes.py"))
DASK = [sys.executable, "-m", "dask"]  # the dask command of this interpreter, whatever its scripts point at


def _wait_for(path: Path, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        time.sleep(0.2)
    raise TimeoutError(f"no {path}")


def _n_workers(address: str) -> int:
    from distributed import Client

    with Client(address, timeout="10s") as client:
        return len(client.scheduler_info()["workers"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler on a free port; workers are added by the tests."""
    folder = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([*DASK, "scheduler", "--port", "0", "--dashboard-address", ":0", "--scheduler-file",
                               str(folder / "scheduler.json")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    address = _wait_for(folder / "scheduler.json")["address"]

    def add_worker(*prefix: str, resources: str | None = None) -> None:
        extra = ["--resources", resources] if resources else []
        procs.append(subprocess.Popen([*prefix, *DASK, "worker", address, "--nthreads", "1", "--no-dashboard", *extra],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    yield address, add_worker, procs
    # the workers first, while the scheduler they say goodbye to is still there, then the scheduler
    for group in (procs[1:], procs[:1]):
        for proc in group:
            proc.terminate()
        for proc in group:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def nodeflow(*args, env=None):
    cmd = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
                          timeout=180)


def _wait_workers(address: str, n: int) -> None:
    deadline = time.monotonic() + 60
    while _n_workers(address) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} workers")
        time.sleep(0.3)


@pytest.mark.slow
def test_scheduler_by_address_and_by_environment_and_what_it_refuses(cluster, tmp_path, cli):
    address, add_worker, procs = cluster
    add_worker()
    _wait_workers(address, 1)
    graph = make_graph({"a": ("test.constant", {"value": 2}), "b": ("test.constant", {"value": 5}),
                        "sum": ("test.add", {})}, ["a.value->sum.a", "b.value->sum.b"])
    graph.save(tmp_path / "g.json")
    ws = tmp_path / "ws"
    result = cli("run", str(tmp_path / "g.json"), "--workspace", str(ws), "--scheduler", address,
                 "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert f"the Dask cluster at {address}: 1 worker process(es), 1 thread(s) each" in result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["nodes"]["sum"]["metrics"] == {"sum": 7.0}
    again = cli("run", str(tmp_path / "g.json"), "--workspace", str(ws), env={"NODEFLOW_DASK_SCHEDULER": address})
    assert again.returncode == 0 and f"the Dask cluster at {address}" in again.stderr and "0 ran, 3 cached" in again.stderr

    # a node that asks for a GPU, and no worker offering one: refused before anything runs, naming the way out
    gpu = make_graph({"a": ("test.constant", {"value": 1}), "train": ("test.gpu_add", {})}, ["a.value->train.a"])
    gpu.save(tmp_path / "gpu.json")
    refused = cli("--nodes", GPU_NODES, "run", str(tmp_path / "gpu.json"), "--workspace", str(ws),
                  "--scheduler", address)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: --scheduler {address}: node 'train' needs GPU=1 but no worker offers it; start workers with "
        f"`dask worker {address} --resources GPU=1`")
    # a worker that offers one takes the task, and only it
    add_worker(resources="GPU=1")
    _wait_workers(address, 2)
    taken = cli("--nodes", GPU_NODES, "run", str(tmp_path / "gpu.json"), "--workspace", str(ws),
                "--scheduler", address)
    assert taken.returncode == 0, taken.stderr
    from distributed import Client

    with Client(address, timeout="10s") as client:
        gpu_worker = next(a for a, w in client.scheduler_info()["workers"].items() if w.get("resources"))
    assert f"train: running on {gpu_worker}" in taken.stderr


def test_a_workspace_the_workers_cannot_see_is_named(cluster, tmp_path):
    """A worker in its own mount namespace, with an empty folder mounted over the workspace's parent:
    it sees another folder at the same path, as a worker on a machine without the share would."""
    address, add_worker, procs = cluster
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    before = _n_workers(address)
    add_worker("unshare", "-m", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs none "{hidden}" && exec "$0" "$@"')
    _wait_workers(address, before + 1)
    graph = make_graph({"a": ("test.constant", {})}, [])
    graph.save(tmp_path / "g.json")
    result = nodeflow("run", str(tmp_path / "g.json"), "--workspace", str(hidden / "ws"), "--scheduler", address)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --scheduler {address}: the workspace {hidden / 'ws'} is not shared with worker(s) ")
    assert last.endswith("put the workspace on storage every worker mounts at the same path (--workspace)")
    assert not (hidden / "ws" / "cache").exists()  # nothing ran
