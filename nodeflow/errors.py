"""What can be wrong with a graph before it runs, and what a node failing while it runs raises."""

from __future__ import annotations

from typing import Any

from nodeflow.node import UnknownNodeType

class GraphProblem(Exception):
    """One thing wrong with a graph, tied to the node (and port or param) to change."""

    #: "error" blocks a run of the node; "warning" (:class:`GraphWarning`) is only said
    severity = "error"

    def __init__(self, node_id: str | None, message: str, *, port: str | None = None,
                 param: str | None = None, other_node: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.message = message
        self.port = port
        self.param = param
        self.other_node = other_node

    @property
    def where(self) -> str:
        if self.node_id is None:
            return "graph"
        detail = self.param and f".{self.param}" or self.port and f":{self.port}" or ""
        return f"{self.node_id}{detail}"

    @property
    def blocking(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "severity": self.severity, "node": self.node_id, "port": self.port,
                "param": self.param, "other_node": self.other_node, "message": self.message}


class GraphWarning(GraphProblem):
    """Something that will run, but probably not as meant (a ReLU on the output layer, weights that
    cannot be downloaded here): shown by validation, never blocking a run."""

    severity = "warning"

    def __str__(self) -> str:
        return f"warning: {self.where}: {self.message}"


class GraphCycleError(GraphProblem):
    def __init__(self, loop: list[str]) -> None:
        path = " -> ".join(loop + loop[:1])
        super().__init__(loop[0], f"the graph has a cycle: {path}; remove one of these edges")
        self.loop = loop


class UnknownTypeError(GraphProblem):
    pass


class ParamError(GraphProblem):
    pass


class MissingInputError(GraphProblem):
    pass


class PortTypeError(GraphProblem):
    pass


class UnknownPortError(GraphProblem):
    pass


class DisabledInputError(GraphProblem):
    """An input fed by a disabled node (or by one that waits for a disabled node)."""


class GraphInvalid(Exception):
    """Raised instead of running when validation found problems; carries all of them."""

    def __init__(self, problems: list[GraphProblem]) -> None:
        self.problems = problems
        noun = "error" if len(problems) == 1 else "errors"
        super().__init__(f"{len(problems)} {noun} in the graph:\n" + "\n".join(f"  {p}" for p in problems))


class NodeError(Exception):
    """A node failed while running."""

    def __init__(self, node_id: str, cause: BaseException, trace: str = "") -> None:
        self.node_id = node_id
        self.cause = cause
        self.trace = trace
        super().__init__(f"node '{node_id}' failed: {describe_exception(cause)}")


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, (KeyError,)) and text.startswith("'") and not isinstance(exc, UnknownNodeType):
        text = f"missing key {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


