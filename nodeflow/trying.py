"""Trying a trained model on pictures: ``POST /api/models/{node}/predict``, the editor's Try it tab
and ``nodeflow predict`` ask a :class:`Tryer`, which answers each picture's classes, ranked, and when
asked the Grad-CAM overlay of its top class.

The model is loaded and run in a process of its own (:class:`ModelProcess`), never in the process
that serves the editor: that process rebuilds the catalogue as a run's worker does, loads the node's
cached model through its node type (the type's ``predictor``), keeps it loaded while it is used and
ends when it has been idle for ``idle_seconds``, giving its memory back. It runs under the job's
limits (its memory capped as a run's worker's is).

Which model: the node's result for its current parameters; when the node has changed since it last
ran (stale), the model it last trained, and the answer says so. A node that never trained is refused
(:class:`NotTrained`, "run NODE first").

Pictures are untrusted. Before any is sent on they are checked here from their headers only (an
image format Pillow reads, at most :data:`MAX_PICTURES` of them, each at most ``max_pixels`` and
Pillow's decompression-bomb limit, at least :data:`MIN_SIDE` pixels a side); the model's process
decodes them (grey, palette and RGBA pictures become RGB) and refuses one it cannot decode. Nothing is
written anywhere: overlays are kept in this process's memory (the last :data:`OVERLAYS_KEPT`).
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PIL import Image

from nodeflow.errors import describe_exception
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.uploads import IMAGE_FORMATS, UploadLimits
from nodeflow.worker import WorkerDied, _messages, _process_executor, _receive, end_child, start_child

#: pictures one request may send
MAX_PICTURES = 16
#: the bytes of one picture
MAX_PICTURE_BYTES = 8 * 1024 * 1024
#: the fewest pixels a side of a picture may have
MIN_SIDE = 8
#: a picture's name, as it is echoed back, is cut to this many characters
NAME_CHARS = 120
#: how long the model's process waits for the next request before it ends
IDLE_SECONDS = 300.0
#: overlays kept in memory to be fetched by their URL
OVERLAYS_KEPT = 64


class TryRefused(ValueError):
    """A request to try a model refused before any work: ``status`` is the HTTP answer (404 no such
    node or no model there, 409 not trained yet, 413 too many or too large pictures, 422 a picture
    that is not one), the message says what to change. Nothing was written."""

    def __init__(self, message: str, status: int = 422, picture: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.picture = picture


class NotTrained(TryRefused):
    def __init__(self, node_id: str) -> None:
        super().__init__(f"node '{node_id}' has no trained model yet: run {node_id} first", 409)


@dataclass(frozen=True)
class Picture:
    """A picture sent to be classified: its name as given (for the answer) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Model:
    """Which cached result of a node answers: its key, and whether the node has changed since."""

    node_id: str
    node_type: str
    key: str
    stale: bool
    run: int | None = None


def shown_name(name: str | None, index: int) -> str:
    """A picture's name as the answer echoes it: printable, cut, or ``image-N`` when it has none."""
    text = "".join(ch for ch in (name or "") if ch.isprintable())[:NAME_CHARS]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text or f"image-{index + 1}"


def check_pictures(pictures: list[Picture], max_pixels: int = UploadLimits().max_pixels) -> None:
    """Refuse (TryRefused) what is no picture to classify, judged from the headers alone."""
    if not pictures:
        raise TryRefused("send at least one image (multipart field 'image')", 422)
    if len(pictures) > MAX_PICTURES:
        raise TryRefused(f"{len(pictures)} images: send at most {MAX_PICTURES} at once", 413)
    bomb = Image.MAX_IMAGE_PIXELS
    for picture in pictures:
        name = picture.name
        if len(picture.data) > MAX_PICTURE_BYTES:
            raise TryRefused(f"'{name}' is {len(picture.data):,} bytes: an image may be at most "
                             f"{MAX_PICTURE_BYTES // (1024 * 1024)} MB", 413, name)
        if not picture.data:
            raise TryRefused(f"'{name}' is empty (0 bytes), not an image", 422, name)
        try:
            with Image.open(io.BytesIO(picture.data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            raise TryRefused(f"'{name}' has more pixels than Pillow's decompression-bomb limit", 413, name) from None
        except Exception:  # Pillow raises many kinds of error on what is not an image it reads
            raise TryRefused(f"'{name}' is not an image ({', '.join(IMAGE_FORMATS)} are read)", 422, name) from None
        pixels = width * height
        if pixels > max_pixels or (bomb and pixels > bomb):
            limit = min(max_pixels, bomb) if bomb else max_pixels
            raise TryRefused(f"'{name}' is {width}×{height} = {pixels:,} pixels, more than {limit:,}", 413, name)
        if min(width, height) < MIN_SIDE:
            raise TryRefused(f"'{name}' is {width}×{height} pixels: an image needs at least {MIN_SIDE} pixels a "
                             "side", 422, name)


class Tryer:
    """Answers requests to try the trained models of one workspace's graphs (a session's, or the
    command line's), one request at a time, in a :class:`ModelProcess` started on first use."""

    def __init__(self, executor: Executor, runs: Any = None, limits: JobLimits | None = None,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.executor = executor
        self.runs = runs
        self.process = ModelProcess(executor, limits if limits is not None else executor.limits, idle_seconds)
        self._overlays: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()  # one request at a time
        self._kept = threading.Lock()  # the overlays, read while a request runs

    def model(self, graph: Graph, node_id: str) -> Model:
        """The cached result that answers for ``node_id``; TryRefused when there is none."""
        check_node(graph, node_id)
        node_type = graph.node(node_id).type
        try:
            node_cls = self.executor.registry.get(node_type)
        except KeyError:
            raise TryRefused(f"node '{node_id}' has an unknown type '{node_type}'", 404) from None
        if getattr(node_cls, "predictor", None) is None:
            raise TryRefused(f"node '{node_id}' ({node_cls.title}) gives no trained model to try; try a Trainer "
                             "or a Linear classifier", 404)
        try:
            key = self.executor.keys(graph).get(node_id)
        except Exception:  # the graph has a problem now: its last trained model may still answer
            key = None
        if key is not None and self.executor.cache.has(key):
            return Model(node_id, node_type, key, stale=False)
        for earlier, run in (self.runs.result_keys(node_id) if self.runs is not None else []):
            if earlier != key and self.executor.cache.has(earlier):
                return Model(node_id, node_type, earlier, stale=True, run=run)
        raise NotTrained(node_id)

    def predict(self, graph: Graph, node_id: str, pictures: list[Picture], overlay: bool = False,
                top: int | None = None) -> dict[str, Any]:
        """Each picture's classes, most probable first (``top``: only so many), and with ``overlay``
        the name of its top class's Grad-CAM overlay (see :meth:`overlay`). Raises TryRefused."""
        model = self.model(graph, node_id)
        check_pictures(pictures)
        started = time.perf_counter()
        with self._lock:
            loaded_before = self.process.holds(model.key)
            answers = self.process.predict(model, pictures, overlay)
        results = []
        for picture, answer in zip(pictures, answers):
            ranked = sorted(zip(answer["classes"], answer["probabilities"]), key=lambda pair: -pair[1])
            result: dict[str, Any] = {"image": picture.name, "classes": [
                {"label": label, "probability": probability} for label, probability in ranked[:top or None]]}
            if overlay:
                result["overlay"] = self._keep(answer["overlay"])
            results.append(result)
        found: dict[str, Any] = {"node": node_id, "stale": model.stale, "loaded": not loaded_before,
                                 "seconds": round(time.perf_counter() - started, 4), "results": results}
        if model.stale:
            found["note"] = (f"node '{node_id}' has changed since it was trained: this is the model it trained last"
                             + (f" (run {model.run})" if model.run is not None else "") + f"; run {node_id} again "
                             "to try the model its parameters make now")
        return found

    def _keep(self, png: bytes | None) -> str | None:
        if png is None:
            return None
        name = f"{hashlib.sha256(png).hexdigest()}.png"
        with self._kept:
            self._overlays[name] = png
            self._overlays.move_to_end(name)
            while len(self._overlays) > OVERLAYS_KEPT:
                self._overlays.popitem(last=False)
        return name

    def overlay(self, name: str) -> bytes | None:
        """An overlay PNG drawn for a recent answer, by its name; None when it is not kept (any more)."""
        with self._kept:
            return self._overlays.get(name)

    def close(self) -> None:
        self.process.close()


class ModelProcess:
    """The process that holds a trained model loaded: started on the first request, kept while
    requests come, ended after ``idle_seconds`` without one (a timer, reset by each request)."""

    def __init__(self, executor: Executor, limits: JobLimits = NO_LIMITS, idle_seconds: float = IDLE_SECONDS) -> None:
        self.origins = executor.registry.origins
        self.workspace = str(executor.workspace)
        self.device = executor.device
        self.allowed_roots = None if executor.allowed_roots is None else [str(r) for r in executor.allowed_roots]
        self.limits = limits
        self.idle_seconds = idle_seconds
        self._process: Any = None
        self._conn: Any = None
        self._held: str | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def holds(self, key: str) -> bool:
        """Whether the model of result ``key`` is loaded now."""
        return self.pid is not None and self._held == key

    def predict(self, model: Model, pictures: list[Picture], overlay: bool) -> list[dict[str, Any]]:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            try:
                self._ensure_started()
                self._conn.send(("predict", model.node_type, model.key, [(p.name, p.data) for p in pictures], overlay))
                reply = _receive(self._process, self._conn, None, self.limits)
            except (WorkerDied, OSError) as exc:
                self._end()
                raise TryRefused(f"could not run the model of '{model.node_id}': {exc}", 409) from None
            finally:
                self._timer = threading.Timer(self.idle_seconds, self._idle)
                self._timer.daemon = True
                self._timer.start()
            kind = reply[0]
            if kind == "answers":
                self._held = model.key
                return reply[1]
            if kind == "refused":  # a picture its process could not decode
                raise TryRefused(reply[1], 422, reply[2])
            if kind == "gone":  # the cache entry went between the check and the load
                raise NotTrained(model.node_id)
            raise TryRefused(f"could not run the model of '{model.node_id}': {self.limits.name_memory_limit(reply[1])}",
                             409)

    def _idle(self) -> None:
        if self._lock.acquire(blocking=False):  # a request going on: it sets the next timer
            try:
                self._end()
            finally:
                self._lock.release()

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._process, self._conn = start_child(_serve_models, "nodeflow-model", self.origins, self.workspace,
                                                self.device, self.allowed_roots, self.limits)
        self._held = None
        reply = _receive(self._process, self._conn, None, self.limits)
        if reply is None or reply[0] != "ready":
            raise WorkerDied(f"the model's process did not start: {reply}")

    def _end(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = self._held = None
        end_child(process, conn)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._end()


def _serve_models(conn, origins, workspace: str, device: str, allowed_roots: list[str] | None,
                  limits: JobLimits) -> None:
    """The model process's loop: under the job's limits, with the catalogue rebuilt, load the asked
    node's cached model (kept for the next request while it is the same) and classify pictures."""
    executor = _process_executor(origins, workspace, device, allowed_roots, limits)
    held: tuple[str, Any] = ("", None)
    for message in _messages(conn):
        _, node_type, key, pictures, overlay = message
        try:
            if held[0] != key:
                held = ("", None)  # the model held before is let go first
                node_cls = executor.registry.get(node_type)
                try:
                    outputs = executor.cache.get(key, node_cls)[0]
                except (KeyError, FileNotFoundError):
                    conn.send(("gone",))
                    continue
                held = (key, node_cls.predictor(outputs, device))
            predictor = held[1]
            decoded = []
            for name, data in pictures:
                try:
                    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                        image.load()
                        decoded.append(image.convert("RGB"))
                except Exception as exc:  # damaged data past a good header
                    conn.send(("refused", f"'{name}' could not be decoded as an image ({type(exc).__name__})", name))
                    break
            else:
                answers = predictor.predict(decoded, overlay=overlay and predictor.explainable())
                conn.send(("answers", [{"classes": list(predictor.classes), "probabilities": list(a.probabilities),
                                        "overlay": a.overlay} for a in answers]))
        except Exception as exc:  # no memory left, weights that do not fit, captum missing: say so
            conn.send(("failed", describe_exception(exc), traceback.format_exc()))


def check_node(graph: Graph, node_id: str) -> None:
    """TryRefused (404) when the graph has no such node: asked before a request's body is read, so
    that another project's node id is simply not there, whatever was sent."""
    if not graph.has_node(node_id):
        raise TryRefused(f"no node with id '{node_id[:80]}'", 404)


def tryer_of(session: Any) -> Tryer:
    """The :class:`Tryer` of a session (made on first use, ended with :func:`close_tryer`)."""
    found = session.__dict__.get("_tryer")
    if found is None:
        found = session.__dict__.setdefault("_tryer", Tryer(session.executor, session.runs))
    return found


def close_tryer(session: Any) -> None:
    found = session.__dict__.pop("_tryer", None)
    if found is not None:
        found.close()
