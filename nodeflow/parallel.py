"""Independent branches at once, on a Dask cluster: a local one (``--jobs N``) or any by address.

The executor plans a run as always; a :class:`Dispatcher` then hands every node that must run to
the cluster as soon as the nodes feeding it have finished. Nothing travels between workers but
cache keys: a worker reads its inputs from the workspace's persisted cache and writes its outputs
there (atomically, see :mod:`nodeflow.cache`), so the workspace must be one folder that every
worker sees at the same path. A node whose outputs cannot be persisted (no codec, or
``persist = False``: values cheaper to compute than to store) is not a task of its own; it is
computed inside the task of each node that consumes it, on that node's worker. Only such a
node with no consumer in the run is a task of its own.

One computation per cache key: tasks are keyed by cache key, so branches of one run or of a
sweep that need the same node share one task; across separate runs sharing the workspace, the
worker holds a lock on the key (:meth:`nodeflow.cache.Cache.computing`) and takes the result a
first process wrote.

A node may declare ``resources = {"GPU": 1}``; its task then runs only on a worker offering
that (``dask worker ADDR --resources GPU=1``), so two trainings never share one GPU unless the
workers say they may.

Dask is imported only here, and this module only when ``--jobs`` or ``--scheduler`` is used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.cache import persistent
from nodeflow.executor import Executor, NodeReport, Prepared, RunReport
from nodeflow.node import Event, Registry, StopFile

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


class Dispatcher:
    """A Dask client and what is needed to run nodes through it. Use as a context manager."""

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
        self._listeners: dict[str, Executor] = {}

    # -- starting and stopping
    def start(self) -> Dispatcher:
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

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __enter__(self) -> Dispatcher:
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
        executor = self._listeners.get(msg.get("run"))
        if executor is not None:
            executor._emit(Event(msg.get("kind", "log"), msg.get("node"), msg.get("data") or {}))

    # -- running
    def run(self, branches: list[Prepared]) -> list[RunReport]:
        """Run planned runs together: each node that must run is one task per cache key, handed to
        the cluster once the nodes feeding it finished; returns a report per run."""
        from distributed import as_completed

        if not branches:
            return []
        state = _State(branches)
        workspace = branches[0].executor.workspace
        if workspace is None:
            raise ParallelSetupError(f"{self.option}: a workspace is needed to share results between workers "
                                     "(--workspace)")
        self.check_workspace(workspace)
        resources = self._check_resources({t.node_id: t.resources for t in state.tasks.values() if t.resources})
        stop_file = workspace / "jobs" / uuid.uuid4().hex / "stop"
        for b in branches:
            self._listeners[b.run_token] = b.executor
        futures: dict[Any, _Task] = {}
        pending = as_completed()
        stopping = False
        try:
            while True:
                if not stopping and any(b.executor._stop.is_set() for b in branches):
                    stopping = True
                    stop_file.parent.mkdir(parents=True, exist_ok=True)
                    stop_file.touch()
                    state.interrupted = True
                for task in state.advance(submit=not stopping):
                    spec = task.spec(str(stop_file))
                    name = f"nodeflow-{task.node_id}-{task.key[:12]}-{uuid.uuid4().hex[:8]}"
                    future = self.client.submit(run_task, spec, key=name, pure=False,
                                                resources=resources.get(task.node_id) or None)
                    futures[future] = task
                    pending.add(future)
                if state.done() or (stopping and not state.running()):
                    break
                if pending.is_empty():
                    if stopping:
                        break
                    raise RuntimeError("nothing left to run but the run is unfinished (a cycle in the plan?)")
                batch = pending.next_batch(block=False)
                if not batch:
                    time.sleep(0.05)  # poll, so a stop request is seen while nodes run
                    continue
                for future in batch:
                    task = futures.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # the worker died or the task could not be unpickled
                        result = {"reports": {task.node_id: {"status": "failed", "seconds": 0.0, "metrics": {},
                                                             "error": f"the Dask worker failed: {_first_line(exc)}"}},
                                  "events": [{"kind": "node_failed", "node_id": task.node_id,
                                              "data": {"message": f"the Dask worker failed: {_first_line(exc)}",
                                                       "key": task.key}}]}
                    state.finished(task, result)
        finally:
            for b in branches:
                self._listeners.pop(b.run_token, None)
            shutil.rmtree(stop_file.parent, ignore_errors=True)
        return state.reports()


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


# -- the plan of a dispatched run ----------------------------------------------------------------------


@dataclass
class _Task:
    key: str
    node_id: str
    branch: Prepared
    resources: dict[str, float]
    deps: set[str] = field(default_factory=set)  # keys of tasks this one waits for
    status: str = "waiting"  # waiting | submitted | done
    result: dict[str, Any] | None = None

    def spec(self, stop_file: str) -> dict[str, Any]:
        ex = self.branch.executor
        return {"origins": ex.registry.origins, "graph": self.branch.checked.graph.model_dump(mode="json"),
                "node": self.node_id, "workspace": str(ex.workspace), "device": ex.device,
                "force": self.node_id in self.branch.force, "stop_file": stop_file,
                "allowed_roots": None if ex.allowed_roots is None else [str(r) for r in ex.allowed_roots],
                "run": self.branch.run_token}


class _State:
    """Which node of which run is done, which task is due, and each run's node reports."""

    def __init__(self, branches: list[Prepared]) -> None:
        self.branches = branches
        self.tasks: dict[str, _Task] = {}
        self.owner: dict[tuple[int, str], str] = {}  # (branch, node) -> task key that produces it
        self.node_reports: list[dict[str, NodeReport]] = [{} for _ in branches]
        self.interrupted = False
        for i, b in enumerate(branches):
            consumers = {n: [] for n in b.needed}
            for edge in b.checked.graph.edges:
                if edge.source in consumers and edge.target in consumers:
                    consumers[edge.source].append(edge.target)
            for node_id in b.needed:
                if b.actions[node_id] != "run":
                    continue
                node = b.checked.types[node_id]
                inline = not persistent(node) and any(b.actions.get(c) == "run" for c in consumers[node_id])
                if inline:
                    continue  # computed inside each consumer's task
                key = b.checked.keys[node_id]
                self.owner[(i, node_id)] = key
                if key not in self.tasks:
                    self.tasks[key] = _Task(key, node_id, b, resources_of(node))
                self.tasks[key].deps |= self._feeding_tasks(i, b, node_id)

    def _feeding_tasks(self, i: int, b: Prepared, node_id: str) -> set[str]:
        """Keys of the tasks whose results a node's task reads: its dispatched ancestors, looking
        through the inline (non-persisted) nodes that its task computes itself."""
        found: set[str] = set()
        for edge in b.checked.graph.incoming(node_id):
            src = edge.source
            if b.actions.get(src) != "run":
                continue
            if (i, src) in self.owner:
                found.add(b.checked.keys[src])
            else:
                found |= self._feeding_tasks(i, b, src)
        return found

    def running(self) -> bool:
        return any(t.status == "submitted" for t in self.tasks.values())

    def done(self) -> bool:
        return all(len(r) == len(b.needed) for r, b in zip(self.node_reports, self.branches))

    def _ok(self, key: str) -> bool:
        task = self.tasks[key]
        return task.status == "done" and task.result["reports"][task.node_id]["status"] in ("ran", "cached")

    def advance(self, submit: bool = True) -> list[_Task]:
        """Resolve what can be resolved (cached nodes, skipped ones) and return tasks now due."""
        due = []
        progress = True
        while progress:
            progress = False
            for i, b in enumerate(self.branches):
                reports = self.node_reports[i]
                for node_id in b.needed:
                    if node_id in reports:
                        continue
                    upstream = [e.source for e in b.checked.graph.incoming(node_id) if e.source in b.actions]
                    if any(u in reports and reports[u].status not in ("ran", "cached") for u in upstream) or \
                            (self.interrupted and not submit and b.actions[node_id] == "run"
                             and self._not_started(i, node_id)):
                        reports[node_id] = NodeReport("skipped")
                        b.executor._emit(Event("node_skipped", node_id, {}))
                        progress = True
                        continue
                    if b.actions[node_id] == "cached":
                        if all(u in reports for u in upstream):
                            key = b.checked.keys[node_id]
                            metrics = b.executor.cache.metrics(key)
                            reports[node_id] = NodeReport("cached", 0.0, metrics,
                                                          tables=b.executor.cache.tables(key))
                            b.executor._last_keys[node_id] = key
                            b.executor._emit(Event("node_finished", node_id, {"seconds": 0.0, "from_cache": True,
                                                                               "metrics": metrics, "key": key}))
                            progress = True
                        continue
                    key = self.owner.get((i, node_id))
                    if key is None:  # inline: reported by a consumer's task, else by none of them
                        consumers = [e.target for e in b.checked.graph.edges
                                     if e.source == node_id and e.target in b.actions]
                        if consumers and all(c in reports for c in consumers):
                            reports[node_id] = NodeReport("skipped")
                            b.executor._emit(Event("node_skipped", node_id, {}))
                            progress = True
                        continue
                    task = self.tasks[key]
                    if task.status == "done":
                        self._report(i, b, node_id, task)
                        progress = True
                    elif task.status == "waiting" and submit and all(self._ok(d) for d in task.deps):
                        task.status = "submitted"
                        due.append(task)
        return due

    def _not_started(self, i: int, node_id: str) -> bool:
        key = self.owner.get((i, node_id))
        return key is None or self.tasks[key].status == "waiting"

    def finished(self, task: _Task, result: dict[str, Any]) -> None:
        task.status = "done"
        task.result = result

    def _report(self, i: int, b: Prepared, node_id: str, task: _Task) -> None:
        """Give node ``node_id`` of run ``i`` its report from a finished task, with the non-persisted
        nodes that task computed for it. Only the run and node the task was for get its events and
        a "ran"; any other node of the same key (in another run of a sweep, or a twin in this one)
        counts as cached, as the sequential executor would find it."""
        reports = self.node_reports[i]
        own = task.branch is b and task.node_id == node_id
        if own:
            for raw in task.result["events"]:
                b.executor._emit(Event(raw["kind"], raw.get("node_id"), raw.get("data") or {}))
        keys = task.branch.checked.keys
        by_key = {keys[n]: raw for n, raw in task.result["reports"].items() if n in keys}
        inline = [n for n in b.needed if n not in reports and b.actions[n] == "run" and (i, n) not in self.owner]
        for n in [node_id, *inline]:
            key = b.checked.keys[n]
            raw = by_key.get(key)
            if raw is None or n in reports:
                continue
            report = NodeReport(raw["status"], raw.get("seconds", 0.0), raw.get("metrics", {}), raw.get("error"),
                                raw.get("tables", {}))
            if not own and report.status == "ran":
                report = NodeReport("cached", 0.0, dict(report.metrics), tables=dict(report.tables))
                b.executor._emit(Event("node_finished", n, {"seconds": 0.0, "from_cache": True,
                                                            "metrics": report.metrics, "key": key}))
            elif not own and report.status in ("failed", "interrupted"):
                b.executor._emit(Event("node_failed" if report.status == "failed" else "interrupted", n,
                                       {"message": report.error or report.status, "key": key}))
            elif not own and report.status == "skipped":
                b.executor._emit(Event("node_skipped", n, {}))
            if report.status in ("ran", "cached", "interrupted"):
                b.executor._last_keys[n] = key
            if report.status == "interrupted":
                self.interrupted = True
            reports[n] = report
        if node_id not in reports:  # the task's run never reached it (stopped before)
            reports[node_id] = NodeReport("skipped")
            b.executor._emit(Event("node_skipped", node_id, {}))

    def reports(self) -> list[RunReport]:
        out = []
        for b, reports in zip(self.branches, self.node_reports):
            for node_id in b.needed:  # a run stopped early: what never started is skipped
                if node_id not in reports:
                    reports[node_id] = NodeReport("skipped")
                    b.executor._emit(Event("node_skipped", node_id, {}))
            interrupted = any(r.status == "interrupted" for r in reports.values()) or (
                self.interrupted and any(r.status == "skipped" for r in reports.values()))
            out.append(b.executor.finish({n: reports[n] for n in b.needed}, interrupted))
        return out


# -- on a worker ---------------------------------------------------------------------------------------

_REGISTRIES: dict[str, Registry] = {}
_CACHES: dict[tuple[str, str], Any] = {}


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one node (and the non-persisted nodes feeding it) on a worker, reading its inputs from the
    shared cache. Returns the node reports and the events, which the client replays in its run."""
    from nodeflow.graph import Graph

    origins_key = json.dumps(spec["origins"], default=str)
    registry = _REGISTRIES.get(origins_key)
    if registry is None:
        registry = _REGISTRIES[origins_key] = Registry.rebuild(spec["origins"])
    roots = None if spec["allowed_roots"] is None else [Path(r) for r in spec["allowed_roots"]]
    executor = Executor(registry, Path(spec["workspace"]), device=spec["device"], stop_flag=StopFile(spec["stop_file"]),
                        allowed_roots=roots)
    cache_key = (spec["workspace"], origins_key)
    if cache_key in _CACHES:  # one memory cache per worker process, for non-persisted values
        executor.cache = _CACHES[cache_key]
    else:
        _CACHES[cache_key] = executor.cache
    events: list[dict[str, Any]] = []
    where = _worker_address()
    last_progress: dict[str, float] = {}

    def live(kind: str, node_id: str | None, data: dict[str, Any]) -> None:
        _publish({"run": spec["run"], "node": node_id, "kind": kind, "data": _plain(data)})

    def listen(event: Event) -> None:
        if event.kind == "progress":  # live only: a progress bar has no use once the node is done
            now = time.monotonic()
            last = event.data.get("done", 0) >= event.data.get("total", 1)
            if last or now - last_progress.get(event.node_id, 0.0) >= PROGRESS_EVERY:
                last_progress[event.node_id] = now
                live("progress", event.node_id, event.data)
            return
        if event.kind == "node_started":
            live("log", event.node_id, {"message": f"running on {where}"})
        events.append({"kind": event.kind, "node_id": event.node_id, "data": _plain(event.data)})

    executor.subscribe(listen)
    graph = Graph.from_data(spec["graph"], "dispatched graph")
    # the plan on the worker: what the client had computed is in the shared cache by now
    report = executor.run(graph, target=spec["node"], force={spec["node"]} if spec["force"] else ())
    # the client already reported the cached inputs; keep this node's events and those of the
    # non-persisted nodes computed for it
    keep = {spec["node"]} | {n for n, r in report.nodes.items() if r.status != "cached"}
    events = [e for e in events if e["node_id"] in keep]
    return {"reports": {n: r.to_json() for n, r in report.nodes.items()}, "events": events}


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


def _plain(data: Any) -> Any:
    """Event data as plain JSON values, to travel back from a worker whatever a node put in it."""
    try:
        return json.loads(json.dumps(data, default=str))
    except (TypeError, ValueError):
        return {"message": str(data)}


def dask_loaded() -> bool:
    """Whether this process imported Dask (a plain run never does)."""
    return "dask" in sys.modules or "distributed" in sys.modules


def dispatcher_wanted(jobs: int | None, scheduler: str | None) -> Dispatcher | None:
    """The dispatcher that ``--jobs``/``--scheduler`` (or $NODEFLOW_DASK_SCHEDULER) ask for, not yet
    started (``with`` starts it); None for a plain run in this process."""
    if jobs is None and not scheduler and not os.environ.get(SCHEDULER_ENV):
        return None
    return Dispatcher(jobs=jobs, scheduler=scheduler or None)
