"""Independent branches at once, on a Dask cluster: a local one (``--jobs N``) or any by address.

:class:`DaskBackend` is a backend of the one scheduler (:mod:`nodeflow.scheduler`): the scheduler
hands it every task as soon as the tasks it needs have finished, and it submits each to the cluster.
Nothing travels between workers but cache keys: a worker reads its inputs from the workspace's
persisted cache and writes its outputs there (atomically, see :mod:`nodeflow.cache`), so the
workspace must be one folder that every worker sees at the same path. A node whose outputs cannot
be persisted (no codec, or ``persist = False``: values cheaper to compute than to store) is not a
task of its own; it is computed inside the task of each node that consumes it, on that node's
worker. Only such a node with no consumer in the run is a task of its own.

One computation per cache key: the scheduler makes one task per cache key, so branches of one run
or of a sweep that need the same node share one task; across separate runs sharing the workspace,
the worker holds a lock on the key (:meth:`nodeflow.cache.Cache.computing`) and takes the result a
first process wrote.

A node may declare ``resources = {"GPU": 1}``; its task then runs only on a worker offering
that (``dask worker ADDR --resources GPU=1``), so two trainings never share one GPU unless the
workers say they may.

Dask is imported only here, and this module only when ``--jobs`` or ``--scheduler`` is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nodeflow.events import Event, Log, NodeStarted, Progress, from_json, to_json
from nodeflow.executor import Executor
from nodeflow.node import Registry, StopFile
from nodeflow.planner import Prepared
from nodeflow.scheduler import Task
from nodeflow.task import Outcome

SCHEDULER_ENV = "NODEFLOW_DASK_SCHEDULER"
#: events a worker streams while a node runs (where it runs, its progress); the rest come back,
#: in order, with the task's result
TOPIC = "nodeflow-events"
#: at most this many seconds between two live progress events of one node (the last always goes)
PROGRESS_EVERY = 0.25


class ParallelSetupError(ValueError):
    """A cluster that cannot run this workspace; the message names the option to fix."""


def resources_of(node: type) -> dict[str, float]:
    """What a node type asks of the worker that runs it (``resources`` class attribute; none by default)."""
    return dict(node.resources)


def threads_per_worker(jobs: int, cores: int | None = None) -> int:
    """Cores shared out among ``jobs`` worker processes, at least one thread each."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """This process's environment as it was before the block. Dask's nanny writes the variables it
    gives its workers (one BLAS thread each, a fixed hash seed) into its own process's environment
    before spawning them; left there, every process started here afterwards (the editor's worker,
    a training's data loaders, an exported script) would run torch on one thread."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        os.environ.update(before)


class DaskBackend:
    """A Dask client and what is needed to run tasks through it. Use as a context manager."""

    keeps_values = False
    wants_outputs = False

    def __init__(self, jobs: int | None = None, scheduler: str | None = None, threads: int | None = None) -> None:
        if jobs is None and scheduler is None:
            scheduler = os.environ.get(SCHEDULER_ENV) or None
        if jobs is not None and scheduler is not None:
            raise ParallelSetupError("--jobs and --scheduler: give one, not both")
        if jobs is not None and jobs < 1:
            raise ParallelSetupError(f"--jobs {jobs}: give 1 or more worker processes")
        self.jobs = jobs
        self.scheduler = scheduler
        self.threads = threads if threads is not None else (threads_per_worker(jobs) if jobs else None)
        self.option = f"--jobs {jobs}" if jobs is not None else f"--scheduler {scheduler}"
        self.cluster = None
        self.client = None
        self._checked: set[str] = set()
        #: run token -> where its tasks' events go, for the events workers stream while they run
        self._emitters: dict[str, Callable[[Event], None]] = {}
        self._futures: dict[Any, Task] = {}
        self._resources: dict[str, dict[str, float]] = {}
        self._stop_file: Path | None = None
        # live events and a task's replayed ones arrive on different threads: a node's live start is
        # told once, and nothing live of a node whose task came back is told after it
        self._live_lock = threading.Lock()
        self._started_live: set[tuple[str, str]] = set()
        self._collected: set[tuple[str, str]] = set()
        #: backends sharing this one's client (see :meth:`share`); live events are handed to them
        self._shares: weakref.WeakSet[DaskBackend] = weakref.WeakSet()
        self._shares_lock = threading.Lock()
        self._owns_client = True

    # -- starting and stopping
    def start(self) -> DaskBackend:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ParallelSetupError(f"{self.option}: Dask is not installed; pip install 'nodeflow[dask]'") from None

        if self.jobs is not None:
            import dask

            # a training node's data loader starts processes of its own, which a daemonic worker may not
            dask.config.set({"distributed.worker.daemon": False})
            # N worker processes, each running one node at a time, each node's torch on its share of the
            # cores (OMP_NUM_THREADS, read by torch when a worker imports it), so N trainings don't oversubscribe
            threads = str(self.threads)
            with environment_kept():
                self.cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                            dashboard_address=":0", scheduler_port=0,
                                            env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                                                 "OPENBLAS_NUM_THREADS": threads})
            self.client = Client(self.cluster)
            self._share_gpus()
        else:
            try:
                self.client = Client(self.scheduler, timeout="5s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise ParallelSetupError(f"--scheduler {self.scheduler}: cannot reach the Dask scheduler "
                                         f"({_first_line(exc)}); start one with `dask scheduler` and give its "
                                         "address, e.g. tcp://HOST:8786") from None
            if not self.client.scheduler_info().get("workers"):
                self.close()
                raise ParallelSetupError(f"--scheduler {self.scheduler}: the scheduler has no workers; start "
                                         f"some with `dask worker {self.scheduler}`")
        self.client.subscribe_topic(TOPIC, self._on_live_event)
        return self

    def _share_gpus(self) -> None:
        """On a local cluster, give each of the first workers one GPU of this machine, pinned with
        CUDA_VISIBLE_DEVICES and offered as the resource GPU=1; workers beyond the GPUs have none,
        so nodes that declare GPU: 1 never share one."""
        gpus = local_gpus()
        workers = sorted(self.client.scheduler_info().get("workers", {}))
        for address, gpu in zip(workers, gpus):
            self.client.run(_take_gpu, gpu, workers=[address])

    def share(self) -> DaskBackend:
        """Another backend on this one's cluster, with runs of its own: a multi-user server gives each
        project's run queue one, so several people's jobs run on the cluster at once. Closing it
        leaves the cluster and the client to this one."""
        other = DaskBackend(self.jobs, self.scheduler, self.threads)
        other.client, other._owns_client = self.client, False
        with self._shares_lock:
            self._shares.add(other)
        return other

    def close(self) -> None:
        if not self._owns_client:
            self.client = None
            return
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __enter__(self) -> DaskBackend:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> str:
        workers = self.client.scheduler_info().get("workers", {}) if self.client else {}
        if self.jobs is not None:
            return (f"a local Dask cluster: {len(workers)} worker process(es), one node at a time each, "
                    f"{self.threads} torch thread(s) each")
        slots = "/".join(str(t) for t in sorted({w.get("nthreads") for w in workers.values()})) or "?"
        return f"the Dask cluster at {self.scheduler}: {len(workers)} worker process(es), {slots} thread(s) each"

    # -- checks
    def check_workspace(self, workspace: Path) -> None:
        """Refuse a workspace the workers cannot see: write a probe file here, read it there."""
        workspace = Path(workspace).resolve()
        if str(workspace) in self._checked:
            return
        workspace.mkdir(parents=True, exist_ok=True)
        probe = workspace / f".probe-{uuid.uuid4().hex}"
        token = uuid.uuid4().hex
        probe.write_text(token)
        try:
            seen = self.client.run(_read_probe, str(probe))
        finally:
            probe.unlink(missing_ok=True)
        blind = sorted(addr for addr, text in seen.items() if text != token)
        if blind:
            raise ParallelSetupError(
                f"{self.option}: the workspace {workspace} is not shared with worker(s) {', '.join(blind)} "
                "(a file written here is missing there); put the workspace on storage every worker mounts "
                "at the same path (--workspace)")
        self._checked.add(str(workspace))

    def _check_resources(self, wanted: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Resources each node's task will ask for. On a local cluster with no worker offering a
        resource (no GPU here), the node runs without the constraint; on a cluster by address it
        is an error, as the task would wait forever."""
        workers = self.client.scheduler_info().get("workers", {}).values()
        offered: dict[str, float] = {}
        for info in workers:
            for name, amount in (info.get("resources") or {}).items():
                offered[name] = max(offered.get(name, 0.0), float(amount))
        result = {}
        for node_id, res in wanted.items():
            missing = {k: v for k, v in res.items() if offered.get(k, 0.0) < v}
            if missing and self.jobs is None:
                need = " ".join(f"{k}={v:g}" for k, v in missing.items())
                raise ParallelSetupError(f"--scheduler {self.scheduler}: node '{node_id}' needs {need} but no "
                                         f"worker offers it; start workers with `dask worker {self.scheduler} "
                                         f"--resources {need.replace(' ', ',')}`")
            result[node_id] = {} if missing else res
        return result

    # -- live events from workers
    def _on_live_event(self, event: Any) -> None:
        _, msg = event if isinstance(event, tuple) else (None, event)
        with self._shares_lock:
            backends = [self, *self._shares]
        for backend in backends:  # the client has one handler: find whose run it is
            emit = backend._emitters.get(msg.get("run"))
            if emit is not None:
                backend._live(emit, msg)
                return

    def _live(self, emit: Callable[[Event], None], msg: dict[str, Any]) -> None:
        found = from_json(msg["event"])
        where = (msg.get("run"), found.node_id)
        with self._live_lock:
            if where in self._collected:
                return
            if isinstance(found, NodeStarted):
                self._started_live.add(where)
            emit(found)

    # -- the backend protocol (see nodeflow.scheduler) -----------------------------------------------
    def begin(self, branches: list[Prepared]) -> None:
        """Check that the cluster can run these branches (a shared workspace; the resources their
        nodes ask for) before anything runs."""
        workspace = branches[0].executor.workspace if branches else None
        if workspace is None:
            raise ParallelSetupError(f"{self.option}: a workspace is needed to share results between workers "
                                     "(--workspace)")
        self.check_workspace(workspace)
        wanted = {n: resources_of(b.checked.types[n]) for b in branches for n in b.needed
                  if b.actions[n] == "run" and resources_of(b.checked.types[n])}
        self._resources = self._check_resources(wanted)
        self._stop_file = workspace / "jobs" / uuid.uuid4().hex / "stop"
        for b in branches:
            self._emitters[b.run_token] = b.emit

    def end(self) -> None:
        self._emitters.clear()
        self._futures.clear()
        with self._live_lock:
            self._started_live.clear()
            self._collected.clear()
        if self._stop_file is not None:
            shutil.rmtree(self._stop_file.parent, ignore_errors=True)

    def free(self) -> int:
        return 1 << 16  # the cluster queues what its workers cannot take yet

    def submit(self, task: Task, emit: Callable[[Event], None]) -> None:
        ex = task.branch.executor
        spec = {"origins": ex.registry.origins, "graph": task.branch.checked.graph.dumps(), "node": task.node_id,
                "key": task.key, "workspace": str(ex.workspace), "device": ex.device, "force": task.force,
                "stop_file": str(self._stop_file),
                "allowed_roots": None if ex.allowed_roots is None else [str(r) for r in ex.allowed_roots],
                "run": task.run}
        name = f"nodeflow-{task.node_id}-{task.key[:12]}-{uuid.uuid4().hex[:8]}"
        future = self.client.submit(run_task, spec, key=name, pure=False,
                                    resources=self._resources.get(task.node_id) or None)
        self._futures[future] = task

    def collect(self, timeout: float) -> list[tuple[Task, Outcome]]:
        from distributed import wait

        if not self._futures:
            return []
        try:
            done = wait(list(self._futures), timeout=timeout, return_when="FIRST_COMPLETED").done
        except TimeoutError:  # nothing finished meanwhile
            return []
        found = []
        for future in done:
            task = self._futures.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # the worker died or the task could not be unpickled
                result = {"outcome": Outcome("failed", error=f"the Dask worker failed: {_first_line(exc)}").to_json(),
                          "events": []}
            with self._live_lock:
                self._collected.update((task.run, raw["node_id"]) for raw in result["events"])
                self._collected.add((task.run, task.node_id))
                for raw in result["events"]:  # in order, as they happened on the worker
                    if raw["kind"] != "node_started" or (task.run, raw["node_id"]) not in self._started_live:
                        task.branch.emit(from_json(raw))
            found.append((task, Outcome.from_json(result["outcome"])))
        return found

    def stop(self) -> None:
        """The stop request is a file in the workspace's job folder, which every worker sees."""
        if self._stop_file is not None:
            self._stop_file.parent.mkdir(parents=True, exist_ok=True)
            self._stop_file.touch()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def local_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES entries (honouring one already set), from nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    import subprocess

    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


async def _take_gpu(gpu: str, dask_worker=None) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch is imported in this worker
    await dask_worker.set_resources(GPU=1)


def _read_probe(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


# -- on a worker ---------------------------------------------------------------------------------------



_REGISTRIES: dict[str, Registry] = {}
_EXECUTORS: dict[tuple[str, str, str, str], Executor] = {}
_CHECKED: dict[str, Any] = {}


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Compute one task on a worker (and the non-persisted nodes feeding it), reading its inputs from
    the shared cache. Its start, progress and where it runs stream live; the outcome comes back with
    the other events, which the client replays in its run."""
    from nodeflow.graph import Graph

    origins_key = json.dumps(spec["origins"], default=str)
    registry = _REGISTRIES.get(origins_key)
    if registry is None:
        registry = _REGISTRIES[origins_key] = Registry.rebuild(spec["origins"])
    roots = None if spec["allowed_roots"] is None else [Path(r) for r in spec["allowed_roots"]]
    # one executor (so one memory cache, for values not persisted) per worker process and set-up
    place = (spec["workspace"], origins_key, spec["device"], json.dumps(spec["allowed_roots"]))
    executor = _EXECUTORS.get(place)
    if executor is None:
        executor = _EXECUTORS[place] = Executor(registry, Path(spec["workspace"]), device=spec["device"],
                                                allowed_roots=roots)
    digest = hashlib.sha256(spec["graph"].encode()).hexdigest()
    checked = _CHECKED.get(digest)
    if checked is None:
        _CHECKED.clear()
        checked = _CHECKED[digest] = executor.check(Graph.loads(spec["graph"], "the run's graph"))
    events: list[dict[str, Any]] = []
    last_progress: dict[str | None, float] = {}

    def live(event: Event) -> None:
        _publish({"run": spec["run"], "event": to_json(event)})

    def listen(event: Event) -> None:
        match event:
            case Progress(done=done, total=total):  # live only: a progress bar has no use once the node is done
                now = time.monotonic()
                if done >= total or now - last_progress.get(event.node_id, 0.0) >= PROGRESS_EVERY:
                    last_progress[event.node_id] = now
                    live(event)
                return
            case NodeStarted():  # live too, so the editor shows it running (and when it began)
                live(event)
                live(Log(node_id=event.node_id, message=f"running on {_worker_address()}"))
        events.append(to_json(event))

    try:
        outcome = executor.compute(checked, spec["node"], spec["key"], listen, StopFile(spec["stop_file"]),
                                   force=spec["force"])
    except Exception as exc:  # a bug in checking or computing: the outcome says so
        outcome = Outcome("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    return {"outcome": outcome.to_json(), "events": events}


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "this process"


def _publish(message: dict[str, Any]) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, message)
    except Exception:  # live messages are a courtesy; the result carries everything that counts
        pass


def dask_loaded() -> bool:
    """Whether this process imported Dask (a plain run never does)."""
    return "dask" in sys.modules or "distributed" in sys.modules


def cluster_wanted(jobs: int | None, scheduler: str | None) -> DaskBackend | None:
    """The Dask backend that ``--jobs``/``--scheduler`` (or $NODEFLOW_DASK_SCHEDULER) ask for, not yet
    started (``with`` starts it); None for a plain run in this process."""
    if jobs is None and not scheduler and not os.environ.get(SCHEDULER_ENV):
        return None
    return DaskBackend(jobs=jobs, scheduler=scheduler or None)
