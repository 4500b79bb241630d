"""One project's uploaded data (the folders in its workspace's ``data/``): listing them, removing
one, receiving a new one from a browser, and the dataset doctor's look at one. The web routes and
pages call these; what each may do is declared here (:mod:`nodeflow.access`), so a read-only viewer
gets the listing and nothing else.

Receiving is admitted by the owner's disk quota (:meth:`nodeflow.users.quota.DiskQuota.reserve`),
one decision for both limits: how many uploads one person may have arriving at once, and the bytes
the quota has left beside their other uploads in flight, counted as the bytes arrive.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from nodeflow.access import guarded, reads, works, writes
from nodeflow.words import format_bytes
from nodeflow.graph import Graph
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.node import Registry
from nodeflow.uploads import (MULTIPART_SLACK, UPLOAD_NAME, MultipartUpload, NameTaken, UploadLimits, UploadRefused,
                              free_name, upload_folder)
from nodeflow.users.quota import DiskQuota, QuotaExceeded, TooManyUploads
from nodeflow.worker import EstimateFailed, EstimateWorker

#: the catalogue's node types the dataset doctor is made of: a folder reader and the doctor
DOCTOR_TYPES = ("data.image_folder", "data.doctor")
#: how many rows of each finding the doctor's answer carries (the page shows fewer)
DOCTOR_ROWS = 50
#: dataset doctors at once on the machine (each reads every image of a folder)
DOCTORS_AT_ONCE = 2
_DOCTORS = threading.BoundedSemaphore(DOCTORS_AT_ONCE)


@guarded
class ProjectData:
    """The data folder of the project whose workspace is ``workspace``, owned by ``owner``, whose
    disk quota is ``quota`` (None: no quota, no admission). ``registry`` and ``allowed_roots`` are
    the project's own, for the dataset doctor; ``doctors`` bounds the doctors running at once."""

    def __init__(self, workspace: Path, owner: str, quota: DiskQuota | None = None,
                 limits: UploadLimits = UploadLimits(), registry: Registry | None = None,
                 allowed_roots: list[Path] | None = None, doctors: threading.Semaphore = _DOCTORS,
                 job_limits: JobLimits = NO_LIMITS) -> None:
        self.workspace = Path(workspace)
        self.data_dir = self.workspace / "data"
        self.owner = owner
        self.quota = quota
        self.limits = limits
        self.registry = registry
        self.allowed_roots = allowed_roots
        self.doctors = doctors
        #: the doctor reads every image of a folder: it runs in a process of its own under these
        self.job_limits = job_limits

    @reads
    def folders(self) -> list[dict[str, Any]]:
        """The uploaded folders: name, path in the workspace, files and bytes (hidden ones, such as
        uploads still arriving, are not listed)."""
        found = []
        for folder in sorted(self.data_dir.iterdir()) if self.data_dir.is_dir() else []:
            if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith("."):
                files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
                found.append({"name": folder.name, "path": f"data/{folder.name}", "images": len(files),
                              "bytes": sum(p.stat().st_size for p in files)})
        return found

    @writes
    def remove(self, name: str) -> str:
        """Remove the uploaded folder ``name`` and its files (LookupError when there is none);
        returns its path in the workspace. The quota measures the owner's folder again."""
        shutil.rmtree(upload_folder(self.data_dir, name))
        if self.quota is not None:
            self.quota.forget(self.owner)
        return f"data/{name}"

    @writes
    def receive(self, name: str, content_type: str, rename: bool = False,
                length: int | None = None) -> MultipartUpload:
        """Admit an upload into ``data/NAME`` whose multipart body (``content_type``, ``length``
        bytes when announced) is about to arrive: feed it the body, then finish and close it.
        ``rename`` takes a free name (NAME-2, ...) when NAME is there. Refused (UploadRefused, its
        ``limit`` says which) when the owner has as many uploads arriving as they may
        (``uploads_at_once``), their quota is full (``quota``), the announced body is larger than
        ``max_total_bytes``, the name is not allowed (``name``) or taken (:class:`NameTaken`)."""
        reservation = None
        if self.quota is not None:
            try:
                reservation = self.quota.reserve(self.owner, length or 0)
            except TooManyUploads as exc:
                raise UploadRefused(str(exc), limit="uploads_at_once", about_files=False) from None
            except QuotaExceeded as exc:
                raise UploadRefused(str(exc), limit="quota", about_files=False) from None
        try:
            max_body = self.limits.max_total_bytes + MULTIPART_SLACK
            if length is not None and length > max_body:
                raise UploadRefused(f"larger than max_total_bytes = {format_bytes(self.limits.max_total_bytes)}",
                                    limit="max_total_bytes", about_files=False)
            if not isinstance(name, str) or not UPLOAD_NAME.fullmatch(name.strip()) or name.startswith("."):
                message = (f"the folder name {str(name)[:64]!r} is not allowed: use 1 to 64 letters, digits, "
                           "spaces and . _ - (not starting with a dot)")
                raise UploadRefused(message, limit="name", about_files=False, message=message)
            folder = free_name(self.data_dir, name.strip()) if rename else name.strip()
            if not rename and (self.data_dir / folder).exists():
                message = f"the data folder already has '{folder}'; choose another name"
                raise NameTaken(message, about_files=False, message=message)
            return MultipartUpload(content_type, self.data_dir, folder, self.limits, reservation)
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise

    @works
    def doctor(self, name: str) -> dict[str, Any]:
        """The dataset doctor (``data.doctor``, found in the catalogue by its type) on an uploaded
        folder: a two-node graph on the project's workspace and catalogue, run in a process of its own
        under the job's limits (never in the server's: it decodes every image a person uploaded), so
        the page's nodes and run lock are not touched either. Raises LookupError, ValueError."""
        folder = upload_folder(self.data_dir, name)
        registry = self.registry
        missing = [t for t in DOCTOR_TYPES if registry is None or t not in registry]
        if missing:
            raise LookupError(f"the dataset doctor needs the node types {', '.join(missing)}, which this "
                              "server's catalogue does not have")
        graph = Graph.from_data({
            "format": "nodeflow.graph", "version": 1, "name": f"dataset doctor: {name}",
            "nodes": [{"id": "data", "type": DOCTOR_TYPES[0], "params": {"root": str(folder)}},
                      {"id": "doctor", "type": DOCTOR_TYPES[1]}],
            "edges": [{"source": "data", "source_port": "data", "target": "doctor", "target_port": "data"}]})
        with self.doctors:
            process = EstimateWorker(registry, self.workspace, "cpu", self.allowed_roots, self.job_limits)
            try:
                findings = process.findings(graph, "doctor", "findings")
            except EstimateFailed as exc:
                why = str(exc).replace(str(folder), f"data/{name}")  # no path of the server's
                raise ValueError(f"the dataset doctor could not read data/{name} as a dataset: {why}") from None
        tables = findings["tables"]
        prefix = str(folder) + "/"

        def shown(value: Any) -> Any:  # paths inside the upload, as the person knows them
            if isinstance(value, str) and value.startswith(prefix):
                return value[len(prefix):]
            if isinstance(value, list):
                return [shown(v) for v in value]
            if isinstance(value, dict):
                return {k: shown(v) for k, v in value.items()}
            return value

        return {"folder": name, "values": findings["values"], "balance": tables.get("class_balance", []),
                "checked": tables.get("checked", []),
                "findings": {kind: shown(rows[:DOCTOR_ROWS]) for kind, rows in (tables.get("findings") or {}).items()},
                "counts": {kind: len(rows) for kind, rows in (tables.get("findings") or {}).items()}}


def data_of(session: Any, quota: DiskQuota | None, limits: UploadLimits = UploadLimits(),
            doctors: threading.Semaphore = _DOCTORS) -> ProjectData:
    """The data of an open project's session (its workspace, owner, catalogue and job limits)."""
    return ProjectData(session.workspace, session.owner, quota, limits, session.registry, session.allowed_roots,
                       doctors, session.executor.limits)
