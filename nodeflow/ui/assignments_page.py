"""Assignments on the shared server's site: the HTTP API (``/api/assignments...``) and the page of one
assignment's leaderboard (``/assignments/ID``). What a user may call is decided by
:meth:`nodeflow.assignments.Assignments.desk` (an admin's desk has the teacher's operations, a
student's does not: a route reaching for one a desk lacks answers 403)."""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from nicegui import app, ui
from pydantic import BaseModel, ConfigDict, Field

from nodeflow.assignments import (HIDDEN, PER_DAY, TRAINED, Assignment, AssignmentError, Assignments, Handin,
                                  parse_deadline)
from nodeflow.graph import NodeSpec
from nodeflow.handins import Handins
from nodeflow.uploads import MultipartUpload, UploadRefused
from nodeflow.users import User

from .multiuser import Me, MultiUser, _answer_errors
from .routes.data import ClientGone
from .routes.data import body_chunks as _body
from .routes.data import refused_answer as _refusal
from .routes.data import upload_refusal as _upload_refusal


POST_SUMMARY = ("A new assignment (admins; multipart/form-data: title, deadline (ISO 8601, optional), "
                "handins_per_day (default 5), test: a zip of class folders, the hidden test set)")


class HandinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field(max_length=200, description="your project's id")
    node: str = Field(max_length=200, description="the trained-model node to hand in (its current cached model)")


def _teacher(desk: Any, operation: str) -> Any:
    """The desk's ``operation``; a desk without it (a student's) is refused."""
    found = getattr(desk, operation, None)
    if found is None:
        raise HTTPException(403, "only a teacher (an admin) may do this")
    return found


def _answer(call):
    """``call``, with the refusals of the users module (see ``_answer_errors``) and of the assignments
    as HTTP answers."""
    try:
        return _answer_errors(call)
    except AssignmentError as exc:
        raise HTTPException(exc.status, str(exc)) from None


def install_assignments(mu: MultiUser, store: Assignments | None = None) -> Handins:
    """The assignment routes and page on the multi-user site; hand-ins left unscored by the last stop
    are queued again."""
    server = mu.server
    if store is None:
        store = Assignments(server.root, server.registry, upload_limits=server.upload_limits, limits=server.limits,
                            device=server._session_args.get("device", "cpu"))
    handins = Handins(server, store)
    mu.assignments = store
    mu.handins = handins
    teacher_only = {403: {"description": "only a teacher (an admin) may do this"}}
    missing = {404: {"description": "no such assignment"}}

    @app.get("/api/assignments", tags=["assignments"], summary="The assignments")
    def get_assignments(user: Me) -> list[dict[str, Any]]:
        now = store.clock()
        return [a.to_json(now) for a in store.desk(user).list()]

    streamed = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    mu.streamed[("POST", "/api/assignments")] = streamed

    async def post_assignment(user: Me, request: Request) -> Any:
        return await _post_assignment(user, request)

    for target in (app, streamed):  # the site's schema documents it; the streamed app answers it
        target.post("/api/assignments", tags=["assignments"], summary=POST_SUMMARY, responses={
            **teacher_only, 413: {"description": "over the upload limits"},
            415: {"description": "not multipart/form-data"},
            422: {"description": "a refused title, deadline or test set (the reason is named)"}})(post_assignment)

    async def _post_assignment(user: User, request: Request) -> Any:
        if not user.admin:
            return _refusal(403, "only a teacher (an admin) may set an assignment")
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            return _refusal(415, "send the assignment as multipart/form-data")
        assignment_id = store.new_id()
        folder = store.folder / assignment_id
        try:
            upload = MultipartUpload(content_type, folder / "data", HIDDEN, store.upload_limits, None,
                                     files_field="test")
        except UploadRefused as exc:
            return _upload_refusal(exc)
        try:
            async for chunk in _body(request.receive):
                await anyio.to_thread.run_sync(upload.feed, chunk)
            await anyio.to_thread.run_sync(upload.finish, limiter=mu.uploads)
        except UploadRefused as exc:
            await anyio.to_thread.run_sync(lambda: _forget(folder))
            return _upload_refusal(exc)
        except ClientGone:
            await anyio.to_thread.run_sync(lambda: _forget(folder))
            return _refusal(400, "the connection closed before the body ended; nothing was saved")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(upload.close)
        values = upload.values

        def make():
            try:
                per_day = int(values.get("handins_per_day", PER_DAY) or PER_DAY)
            except ValueError:
                raise AssignmentError("handins_per_day must be a whole number") from None
            return store.add(assignment_id, values.get("title", ""), parse_deadline(values.get("deadline")), per_day)
        try:
            made = await anyio.to_thread.run_sync(make)
        except AssignmentError as exc:
            await anyio.to_thread.run_sync(lambda: _forget(folder))
            return _refusal(exc.status, str(exc))
        return made.to_json(store.clock())

    @app.get("/api/assignments/{assignment_id}", tags=["assignments"], summary="One assignment", responses=missing)
    def get_assignment(user: Me, assignment_id: str) -> dict[str, Any]:
        return _answer(lambda: store.desk(user).get(assignment_id)).to_json(store.clock())

    @app.post("/api/assignments/{assignment_id}/close", tags=["assignments"],
              summary="Take no more hand-ins (admins)", responses={**missing, **teacher_only})
    def close_assignment(user: Me, assignment_id: str) -> dict[str, Any]:
        close = _teacher(store.desk(user), "close_assignment")
        return _answer(lambda: close(assignment_id)).to_json(store.clock())

    @app.delete("/api/assignments/{assignment_id}", tags=["assignments"],
                summary="Remove an assignment, its test set and its hand-ins (admins)",
                responses={**missing, **teacher_only})
    def delete_assignment(user: Me, assignment_id: str) -> dict[str, Any]:
        remove = _teacher(store.desk(user), "remove")
        return {"removed": _answer(lambda: remove(assignment_id))}

    @app.post("/api/assignments/{assignment_id}/handins", tags=["assignments"],
              summary="Hand in a trained-model node of your project (its current cached model); it waits its "
                      "turn in the machine's queue, then the server scores it on the hidden test set",
              responses={**missing, 403: {"description": "not your project"},
                         409: {"description": "the node is not trained, the deadline passed or the assignment "
                                              "is closed"},
                         422: {"description": "the node gives no trained model"},
                         429: {"description": "as many hand-ins today as the assignment allows per day"}})
    def post_handin(user: Me, assignment_id: str, body: HandinRequest) -> dict[str, Any]:
        found = _answer(lambda: handins.hand_in(user, assignment_id, body.project, body.node))
        return found.to_json(teacher=user.admin)

    @app.get("/api/assignments/{assignment_id}/handins", tags=["assignments"],
             summary="Your hand-ins (an admin: everyone's)", responses=missing)
    def get_handins(user: Me, assignment_id: str) -> list[dict[str, Any]]:
        return [h.to_json(teacher=user.admin) for h in _answer(lambda: store.desk(user).handins(assignment_id))]

    @app.get("/api/assignments/{assignment_id}/handins/{handin_id}", tags=["assignments"],
             summary="One hand-in: yours; an admin's look also has its graph (read-only) and its confusion "
                     "matrix on the hidden set", responses={404: {"description": "no such hand-in of yours"}})
    def get_handin(user: Me, assignment_id: str, handin_id: str) -> dict[str, Any]:
        desk = store.desk(user)

        def look() -> dict[str, Any]:
            found = desk.handin(handin_id)
            if found.assignment != assignment_id:
                raise AssignmentError(f"no hand-in '{handin_id[:20]}'", 404)
            detail = getattr(desk, "detail", None)
            return detail(found.id) if detail is not None else found.to_json(teacher=False)
        return _answer(look)

    @app.get("/api/assignments/{assignment_id}/leaderboard", tags=["assignments"],
             summary="The leaderboard: each student's best and latest hand-in, accuracy with its 95% Wilson "
                     "interval, ties with the best by McNemar's test; on the public half of the hidden set "
                     "before the deadline, the private half after", responses=missing)
    def get_leaderboard(user: Me, assignment_id: str) -> dict[str, Any]:
        return _answer(lambda: store.desk(user).leaderboard(assignment_id))

    @app.get("/api/assignments/{assignment_id}/grades.csv", tags=["assignments"],
             summary="Grades: each student's best hand-in on the private half (admins)",
             responses={**missing, **teacher_only})
    def get_grades(user: Me, assignment_id: str) -> PlainTextResponse:
        grades = _teacher(store.desk(user), "grades_csv")
        return PlainTextResponse(_answer(lambda: grades(assignment_id)), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="grades-{assignment_id}.csv"'})

    @ui.page("/assignments/{assignment_id}")
    def assignment_page(request: Request, assignment_id: str) -> Any:
        user: User = request.state.user
        try:
            assignment = store.desk(user).get(assignment_id)
        except AssignmentError as exc:
            return HTMLResponse(f"<p role='alert'>{escape(str(exc))}</p>", status_code=exc.status)
        mu.own_client(user)
        LeaderboardPage(store, user, assignment.id)
        return None

    for start in (lambda: handins.resume(),):
        start() if app.is_started else app.on_startup(start)
    app.on_shutdown(store.close)
    return handins


def _forget(folder) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


class HandInControls:
    """Above the form of a trained-model node, in the editor of one's own project on a site with open
    assignments: a choice of the open assignment, "Hand in…" and a link to its board. Handing in is
    the API's (:meth:`Handins.hand_in`, with its rules: own project only, the day's limit, the
    deadline, a trained node); a refusal is shown as a notification and changes nothing."""

    def __init__(self, mu: MultiUser, user: User, project_id: str) -> None:
        self.mu = mu
        self.user = user
        self.project_id = project_id
        self.chosen: str | None = None

    def open_assignments(self) -> list[Assignment]:
        store: Assignments = self.mu.assignments
        now = store.clock()
        return [a for a in store.desk(self.user).list()
                if not a.closed and (a.deadline is None or now < a.deadline)]

    def draw(self, spec: NodeSpec, entry: dict[str, Any]) -> None:
        registry = self.mu.server.registry
        node_type = registry.get(spec.type) if spec.type in registry else None
        if node_type is None or not any(p.type.name == TRAINED for p in node_type.outputs):
            return
        found = self.open_assignments()
        if not found:
            return
        options = {a.id: a.title for a in found}
        if self.chosen not in options:
            self.chosen = found[0].id
        with ui.column().classes("w-full gap-1 q-my-sm nf-handin"):
            ui.label("Hand in this trained model").classes("text-subtitle2")
            with ui.row().classes("w-full items-center no-wrap gap-2"):
                choice = ui.select(options, value=self.chosen, label="assignment") \
                    .props("dense outlined").classes("grow nf-handin-assignment")
                board = ui.link("board", f"/assignments/{self.chosen}").classes("text-sm nf-handin-board")
            choice.on_value_change(lambda e: self._choose(e.value, board))
            ui.button("Hand in…", icon="assignment_turned_in", on_click=lambda: self.hand_in(spec.id)) \
                .props("no-caps color=indigo").classes("nf-handin-button")
            ui.separator()

    def _choose(self, assignment_id: str, board: ui.link) -> None:
        self.chosen = assignment_id
        board.props(f'href="/assignments/{assignment_id}"')

    async def hand_in(self, node_id: str) -> None:
        assignment_id = self.chosen
        if assignment_id is None:
            return
        handin = await anyio.to_thread.run_sync(
            lambda: self.mu.handins.hand_in_or_refusal(self.user, assignment_id, self.project_id, node_id))
        if isinstance(handin, str):
            ui.notify(f"Not handed in: {handin}", type="warning", classes="nf-handin-refused")
            return
        title = self.mu.assignments.get(assignment_id).title
        ui.notify(f"Handed in to '{title}' (hand-in #{handin.id}): it is scored on the hidden test set when "
                  "its turn comes; see the board", type="positive", classes="nf-handin-done")


class LeaderboardPage:
    """One assignment's board: each row's accuracy as a point with its 95% interval, the signed-in
    student's own rows highlighted (for them only), each student's best and latest hand-in."""

    def __init__(self, store: Assignments, user: User, assignment_id: str) -> None:
        self.store = store
        self.user = user
        self.assignment_id = assignment_id
        desk = store.desk(user)
        board = desk.leaderboard(assignment_id)
        with ui.column().classes("w-full p-4 gap-2"):
            with ui.row().classes("items-center gap-4"):
                ui.link("Your projects", "/")
                ui.label(board["title"]).classes("text-h5").props('role="heading" aria-level="1"')
            half = "public half" if board["half"] == "public" else "private half (after the deadline)"
            ui.label(f"Scored on the {half} of the hidden test set: {board['images']} images"
                     + (f"; deadline {board['deadline']}" if board["deadline"] else "")).classes("nf-board-half")
            self.chart = ui.echart(self.figure(board)).classes("w-full nf-board-plot").style("height: 320px")
            with ui.element("table").classes("nf-board").props('aria-label="leaderboard"'):
                with ui.element("tr"):
                    for head in ("#", "student", "hand-in", "accuracy", "95% interval", "handed in", "tied with best"):
                        with ui.element("th").props("scope=col").classes("text-left pr-4"):
                            ui.label(head)
                for place, row in enumerate(board["rows"], start=1):
                    cls = "nf-board-row nf-mine" if row["mine"] else "nf-board-row"
                    style = "background: #fff59d; font-weight: 600" if row["mine"] else ""
                    with ui.element("tr").classes(cls).style(style):
                        cells = (str(place), row["user"], " & ".join(row["kinds"]),
                                 _pct(row["accuracy"]), f"{_pct(row['ci_low'])} … {_pct(row['ci_high'])}",
                                 row["handed_in_at"], "yes" if row["tied_with_best"] else "no")
                        for text in cells:
                            with ui.element("td").classes("pr-4"):
                                ui.label(text)
            detail = getattr(desk, "detail", None)  # the teacher's desk only: a student's has none
            if detail is not None:
                TeacherHandins(desk.handins(assignment_id), detail)

    def figure(self, board: dict[str, Any]) -> dict[str, Any]:
        rows = board["rows"]
        labels = [f"{r['user']} ({' & '.join(r['kinds'])})" for r in rows]
        points = [{"value": [_num(r["accuracy"]), i],
                   "itemStyle": {"color": "#f9a825" if r["mine"] else "#1565c0"}} for i, r in enumerate(rows)]
        intervals = [{"type": "line", "name": "95% interval", "symbol": "none", "silent": True,
                      "lineStyle": {"width": 4, "color": "#f9a825" if r["mine"] else "#90caf9"},
                      "data": [[_num(r["ci_low"]), i], [_num(r["ci_high"]), i]]} for i, r in enumerate(rows)]
        return {"animation": False, "grid": {"left": 160, "right": 30}, "tooltip": {},
                "xAxis": {"type": "value", "min": 0, "max": 1, "name": "accuracy"},
                "yAxis": {"type": "category", "data": labels, "inverse": True},
                "series": [*intervals, {"type": "scatter", "name": "accuracy", "data": points, "symbolSize": 10}]}


class TeacherHandins:
    """The teacher's part of the board: every hand-in (who, when, its status, its accuracy on the
    public and the private half), each opening to its confusion matrix on the hidden set and its graph
    as handed in (to read)."""

    def __init__(self, handins: list[Handin], detail: Callable[[int], dict[str, Any]]) -> None:
        with ui.column().classes("w-full gap-1 q-mt-lg nf-teacher-handins"):
            ui.label("Every hand-in (only you see this)").classes("text-h6") \
                .props('role="heading" aria-level="2"')
            if not handins:
                ui.label("No hand-ins yet.").classes("text-grey-7")
            for handin in handins:
                shown = detail(handin.id)
                head = (f"#{handin.id} · {handin.user} · {shown['handed_in_at']} · {shown['status']} · "
                        f"public {_pct(shown.get('public_accuracy'))} · private {_pct(shown.get('private_accuracy'))}")
                with ui.expansion(head).classes("w-full nf-teacher-handin").props("dense"):
                    if shown.get("error"):
                        ui.label(shown["error"]).classes("text-negative text-sm")
                    if "confusion" in shown:
                        _confusion(shown["confusion"]["classes"], shown["confusion"]["matrix"])
                    if shown.get("graph"):
                        _graph(shown["graph"])


def _confusion(classes: list[str], matrix: list[list[int]]) -> None:
    ui.label("Confusion matrix on the hidden set (rows: true class, columns: predicted)").classes("text-sm")
    with ui.element("table").classes("nf-confusion").props('aria-label="confusion matrix"'):
        with ui.element("tr"):
            with ui.element("th"):
                ui.label("true \\ predicted")
            for name in classes:
                with ui.element("th").props("scope=col").classes("px-2"):
                    ui.label(name)
        for name, row in zip(classes, matrix):
            with ui.element("tr"):
                with ui.element("th").props("scope=row").classes("text-left pr-2"):
                    ui.label(name)
                for i, count in enumerate(row):
                    diagonal = i == classes.index(name)
                    with ui.element("td").classes("px-2 text-right nf-confusion-cell") \
                            .style("background: #c8e6c9" if diagonal and count else ""):
                        ui.label(str(count))


def _graph(graph: dict[str, Any]) -> None:
    """The handed-in graph, to read: each node with its type and parameters, then the wiring."""
    ui.label("Graph as handed in").classes("text-sm q-mt-sm")
    with ui.element("table").classes("nf-handin-graph text-xs").props('aria-label="graph as handed in"'):
        for node in graph.get("nodes", []):
            with ui.element("tr"):
                for text in (str(node.get("id", "")), str(node.get("type", "")),
                             ", ".join(f"{k}={json.dumps(v)}" for k, v in (node.get("params") or {}).items())):
                    with ui.element("td").classes("pr-3 align-top"):
                        ui.label(text)
    wires = [f"{e.get('source')}.{e.get('source_port')} → {e.get('target')}.{e.get('target_port')}"
             for e in graph.get("edges", [])]
    if wires:
        ui.label("; ".join(wires)).classes("text-xs text-grey-8 nf-handin-wiring")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> float:
    return 0.0 if value is None else round(float(value), 4)


__all__ = ["HandInControls", "install_assignments", "LeaderboardPage"]
