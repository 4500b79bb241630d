"""What a run tells when it ends: a report per node and one for the run, as the scheduler records
them and the run store, the command line and the editor read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeReport:
    status: str  # ran | cached | failed | skipped | interrupted
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: named tables the node put beside its metrics (``ctx.table``): {"columns": [...], "rows": [...]}
    tables: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 4), "metrics": self.metrics}
        if self.error:
            data["error"] = self.error
        if self.tables:
            data["tables"] = self.tables
        return data


@dataclass
class RunReport:
    ok: bool
    nodes: dict[str, NodeReport]
    interrupted: bool = False
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "interrupted": self.interrupted,
                "nodes": {k: v.to_json() for k, v in self.nodes.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        nodes = {k: NodeReport(v["status"], v.get("seconds", 0.0), v.get("metrics", {}), v.get("error"),
                               v.get("tables", {}))
                 for k, v in data["nodes"].items()}
        return cls(ok=data["ok"], nodes=nodes, interrupted=data.get("interrupted", False))

    def failure(self) -> tuple[str, NodeReport] | None:
        return next(((k, v) for k, v in self.nodes.items() if v.status == "failed"), None)


__all__ = ["NodeReport", "RunReport"]
