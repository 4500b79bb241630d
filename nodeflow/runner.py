"""The one driver of runs, in the manner of Kedro's ``runner/runner.py``: the command line, a sweep
and the run queue all hand it their runs (:class:`Job`). It records each in the run store when one
is given, plans them, runs them together on one backend through the scheduler
(:func:`nodeflow.scheduler.execute`) and alone decides each run's final status:

- ``done``, ``failed`` or ``stopped``, as the run's report says (:func:`nodeflow.runs.report_status`);
- ``interrupted`` when the backend's worker process died under it;
- ``untouched`` (a sweep passes ``cancelled``) when a stop left it with nothing done;
- ``cancelled`` when its run was cancelled while it ran;
- ``failed`` with the reason when it could not be planned or the backend broke; elsewhere what was
  raised ends every run of the call ``failed`` (``stopped`` for Ctrl-C) and is raised again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nodeflow.errors import GraphInvalid, describe_exception
from nodeflow.events import Event
from nodeflow.graph import Graph
from nodeflow.planner import Prepared, Runs
from nodeflow.reports import RunReport
from nodeflow.runs import Recording, RunStore, report_status
from nodeflow.scheduler import InProcess, execute


class Plans(Runs, Protocol):
    """What the driver needs of an executor (:class:`nodeflow.executor.Executor`)."""

    backend: Any

    @property
    def stop_flag(self) -> Any: ...

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]: ...

    def prepare(self, graph: Graph, target: str | None = None, force: Iterable[str] = (),
                listeners: Iterable[Callable[[Event], None]] = ()) -> Prepared: ...


@dataclass
class Job:
    """One run to drive, and what became of it."""

    graph: Graph
    target: str | None = None
    force: tuple[str, ...] = ()
    #: the run's source in the store (cli, sweep, editor...)
    source: str = "cli"
    #: its row in the store: a queued run's, or the one made for it
    run_id: int | None = None
    report: RunReport | None = None
    status: str | None = None
    error: str | None = None
    #: why the whole call could not go on (its backend broke, or a bug), told once per job
    broke: str | None = None
    listeners: list[Callable[[Event], None]] = field(default_factory=list)


def final_status(report: RunReport, died: bool = False, cancelled: bool = False,
                 untouched: str | None = None) -> tuple[str, str | None]:
    """A run's final status and error from its report and what happened around it (see the module)."""
    status, error = report_status(report), None
    if died:
        failure = report.failure()
        status, error = "interrupted", failure[1].error if failure else "the worker process stopped"
    if untouched and report.interrupted and all(r.status == "skipped" for r in report.nodes.values()):
        status = untouched
    if cancelled:
        status = "cancelled"
    return status, error


def drive(executor: Plans, jobs: list[Job], backend: Any = None, store: RunStore | None = None,
          stop_requested: Callable[[], bool] | None = None, keep_going: bool = False,
          cancelled: Callable[[int | None], bool] = lambda run_id: False,
          untouched: str | None = None) -> list[Job]:
    """Run ``jobs`` together on ``backend`` (the executor's, else one node at a time in this process),
    each recorded in ``store`` when given; returns them with their report and final status.
    ``keep_going`` (a queue): a job that cannot be planned, or a backend that breaks, ends the jobs
    it concerns ``failed`` and nothing is raised; otherwise that is raised (``GraphInvalid`` or
    ``KeyError`` before anything runs). ``stop_requested``: see :func:`nodeflow.scheduler.execute`;
    ``cancelled``: whether a run was cancelled meanwhile; ``untouched``: see :func:`final_status`."""
    if backend is None:
        backend = executor.backend if executor.backend is not None else InProcess(executor.stop_flag)
    deaths = getattr(backend, "deaths", 0)
    with contextlib.ExitStack() as stack:
        recordings: list[Recording | None] = []
        for job in jobs:
            recording = None if store is None else stack.enter_context(
                Recording(store, executor, job.graph, job.target, source=job.source, run_id=job.run_id,
                          subscribe=False))
            if recording is not None:
                job.run_id = recording.run_id
            recordings.append(recording)
        planned: list[tuple[Job, Recording | None, Prepared]] = []
        for job, recording in zip(jobs, recordings):
            heard = [*job.listeners, *([recording.recorder] if recording is not None else [])]
            try:
                planned.append((job, recording, executor.prepare(job.graph, job.target, job.force, heard)))
            except (GraphInvalid, KeyError, ValueError) as exc:  # e.g. a data folder gone since it was queued
                if not keep_going:
                    raise
                _settle(job, recording, None, "failed", str(exc).strip('"'))
        try:
            reports = execute([p for _, _, p in planned], backend, stop_requested) if planned else []
        except Exception as exc:  # a cluster that cannot run it, or a bug: say so, keep the queue going
            if not keep_going:
                raise
            for job, recording, _ in planned:
                job.broke = describe_exception(exc)
                _settle(job, recording, None, "failed", job.broke)
            reports = []
        died = getattr(backend, "deaths", 0) != deaths
        for (job, recording, prepared), report in zip(planned, reports):
            if isinstance(backend, InProcess):
                report.outputs = backend.values.get(prepared.run_token, {})
            _settle(job, recording, report, *final_status(report, died, cancelled(job.run_id), untouched))
    return jobs


def _settle(job: Job, recording: Recording | None, report: RunReport | None, status: str,
            error: str | None) -> None:
    job.report, job.status, job.error = report, status, error
    if recording is not None:
        recording.report, recording.status, recording.error = report, status, error


__all__ = ["Job", "drive", "final_status"]
