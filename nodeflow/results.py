"""A finished node's details, read from its cached result: the tables it put in its report and, for a
node that offers them (error analysis), the images of a confusion-matrix cell with their overlays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeflow.access import guarded, reads, works
from nodeflow.errors import describe_exception
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import ParamProblem, RunContext


@guarded
class Results:
    """What a finished node holds, for the editor and the HTTP API: of the document's graph as it is
    now, or with ``run`` of the graph that run ran (``graph_of``: a run's number to its graph)."""

    def __init__(self, executor: Executor, workspace: Path, document: Any = None,
                 graph_of: Callable[[int | str], Graph] | None = None) -> None:
        self.executor = executor
        self.workspace = Path(workspace)
        self.document = document
        self.graph_of = graph_of

    def _graph(self, run: int | str | None) -> Graph:
        if run is None or self.graph_of is None:
            return self.document.graph
        return self.graph_of(run)

    @reads
    @property
    def overlay_folder(self) -> Path:
        """Where drawn-on-demand images (Grad-CAM overlays of a confusion cell) are kept."""
        return self.workspace / "overlays"

    @reads
    def finished(self, graph: Graph, node_id: str) -> tuple[type, str, dict[str, str]]:
        """The node's type, its cache key and the keys of its inputs by port; LookupError when there is
        no such node or it has no cached result for its current params."""
        if not graph.has_node(node_id):
            raise LookupError(f"no node with id '{node_id}'")
        node_cls = self.executor.registry.get(graph.node(node_id).type)
        keys = self.executor.keys(graph)
        key = keys.get(node_id)
        if key is None or not self.executor.cache.has(key):
            raise LookupError(f"node '{node_id}' has no result for its current parameters: run it first")
        inputs = {e.target_port: keys[e.source] for e in graph.incoming(node_id) if e.source in keys}
        return node_cls, key, inputs

    @reads
    def tables(self, node_id: str) -> dict[str, Any]:
        """The tables a finished node put in its report (``ctx.table``), e.g. the doctor's findings."""
        _, key, _ = self.finished(self._graph(None), node_id)
        return self.executor.cache.tables(key)

    @works
    def cell_gallery(self, node_id: str, true: str, predicted: str, page: int = 1,
                     per_page: int = 12, run: int | str | None = None) -> dict[str, Any]:
        """One page of a confusion cell's images, drawing the Grad-CAM overlays not drawn yet; of
        the graph open now, or with ``run`` of the graph that run ran (a compared run's flipped
        image: its stored result, whatever was edited since; RunNotFound, a LookupError)."""
        return self._gallery(self._graph(run), node_id, true, predicted, page, per_page)

    @reads
    def drawn_cell_gallery(self, node_id: str, true: str, predicted: str, page: int = 1,
                           per_page: int = 12, run: int | str | None = None) -> dict[str, Any]:
        """The same page with only the overlays drawn before: nothing is drawn or written."""
        return self._gallery(self._graph(run), node_id, true, predicted, page, per_page, draw=False)

    def _gallery(self, graph: Graph, node_id: str, true: str, predicted: str, page: int = 1,
                per_page: int = 12, draw: bool = True) -> dict[str, Any]:
        """One page of a confusion-matrix cell's images with their overlays (``draw`` False: only
        those drawn before), from a finished node
        whose type offers ``cell_gallery`` (error analysis). Reads the node's cached result and
        loads an input (the model) from the cache only when an overlay must be drawn. Raises
        LookupError (no such node, cell or page; not run; no galleries), ParamProblem (a param
        the drawing refuses) or RuntimeError (anything else, with the cause)."""
        node_cls, key, input_keys = self.finished(graph, node_id)
        gallery = getattr(node_cls, "cell_gallery", None)
        if gallery is None:
            raise LookupError(f"node '{node_id}' ({node_cls.type}) has no image galleries; add an Error analysis "
                              "node (eval.errors) on the same model and data")
        spec = graph.node(node_id)
        sources = {e.target_port: e for e in graph.incoming(node_id)}
        registry, cache = self.executor.registry, self.executor.cache

        def load_input(port: str) -> Any:
            edge = sources[port]
            return cache.get(input_keys[port], registry.get(graph.node(edge.source).type))[0][edge.source_port]

        try:
            outputs = cache.get(key, node_cls)[0]
            return gallery(node_cls.Params.model_validate(spec.params), outputs, input_keys, load_input,
                           self.overlay_folder, self.workspace, self.executor.device, true, predicted, page, per_page,
                           RunContext(node_id, self.workspace, allowed_roots=self.executor.allowed_roots).check_files,
                           draw=draw)
        except KeyError as exc:
            raise LookupError(exc.args[0] if exc.args else str(exc)) from None
        except (LookupError, ParamProblem):
            raise
        except Exception as exc:  # an unreadable cache entry, a missing image file: say which
            raise RuntimeError(f"could not show the images of node '{node_id}': {describe_exception(exc)}") from exc
