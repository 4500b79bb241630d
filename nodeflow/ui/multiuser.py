"""The editor for many people (``nodeflow serve --users``): sign-in, the open projects, the HTTP API
per project, uploads, and the site's own routes; the pages are in :mod:`nodeflow.ui.project_pages`, and
:mod:`nodeflow.ui.site` puts the two together.

How a request finds its data, and why it cannot find anyone else's:

- Every request is someone's (:mod:`nodeflow.users.login`: the session cookie or an API token),
  the websocket included: a page client belongs to the user whose request built it, and a socket
  may attach to, and send events to, only the clients of its own user (:func:`guard_sockets`).
- The API of one project lives under ``/api/p/{project_id}/...`` and is the one-person API
  (:func:`nodeflow.ui.routes.add_api_routes`) bound to that project's session alone, plus its
  uploads. :class:`ProjectRouter` looks the project up for the signed-in user before anything is
  read: a project they may not read answers 404, as one that does not exist; a change (or work:
  an estimate, the doctor) in a project they may only read answers 403. Run, sweep, overlay and
  folder names are then looked up in that project only, so another person's are simply not there.
- Everything else under ``/api/`` (projects, class templates, the machine's queue, API tokens)
  takes the user from the request and checks each id where it is read.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Annotated, Any
from urllib.parse import parse_qs

import anyio
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from nicegui import __version__ as nicegui_version
from nicegui import app, core, ui
from pydantic import BaseModel, ConfigDict, Field

from nodeflow.access import ReadOnlyView, beside, unwrapped
from nodeflow.project_data import ProjectData, data_of
from nodeflow.server import ClassServer, WorkRefused
from nodeflow.session import Session
from nodeflow.users import AccountError, NotAllowed, Project, ProjectNotFound, User
from nodeflow.users.login import current_user

from .api import API_BASE, RequestGuard, document_refusals, refusal, twice_given
from .open_pages import OpenPages
from .routes import add_api_routes
from .routes.data import data_routes
from .state import Hub

#: a project's API: /api/p/{project_id} followed by the path of the one-person API
PROJECT_API = re.compile(r"/api/p/([^/]*)(/.*)?\Z", re.S)
#: NiceGUI's own scripts and styles carry no data; its websocket needs a signed-in user (guard_sockets)
PUBLIC = (f"/_nicegui/{nicegui_version}/", "/favicon")
#: uploads being unpacked and decoded at once, all users together (the dataset doctor has its own
#: bound, nodeflow.project_data.DOCTORS_AT_ONCE): the server's other work goes on
DECODING_AT_ONCE = 2
IDLE_CHECK_SECONDS = 60.0


@dataclass
class Access:
    """One way into an open project: the hub its pages share and the API bound to the same session
    (the whole session for its owner; a :class:`~nodeflow.access.ReadOnlyView` of it for a viewer)."""

    hub: Hub
    api: FastAPI
    guarded: RequestGuard


@dataclass
class ProjectView:
    """What the server keeps per open project: its session, the owner's way in, and the viewers' ways
    in (one per reason they read it only: shared with them, archived, an admin's look)."""

    project: Project
    session: Session
    owner: Access
    viewers: dict[str, Access] = field(default_factory=dict)

    @property
    def hub(self) -> Hub:
        return self.owner.hub


def read_only_reason(user: User, project: Project) -> str:
    """Why ``user`` may only read ``project`` (what their page and every refusal says)."""
    if project.owner == user.name:
        return "archived (restore it on the project list to change it)"
    if not user.admin or user.name in project.shared_with:
        return f"{project.owner}'s project, shared with you"
    return f"{project.owner}'s project, open to you as an admin"


class MultiUser:
    """The multi-user site on NiceGUI's app (see :func:`nodeflow.ui.site.install_multiuser`)."""

    def __init__(self, server: ClassServer) -> None:
        self.server = server
        self._views: dict[str, ProjectView] = {}
        self._lock = threading.Lock()
        #: NiceGUI client id -> the user whose request built that page
        self.owners: dict[str, str] = {}
        self.uploads = anyio.CapacityLimiter(DECODING_AT_ONCE)
        self._stop_idle = threading.Event()
        #: (method, path) -> an ASGI app that reads its own multipart body as it streams in (the site's
        #: routes past the JSON-only guard; the other rules stand, see ProjectRouter)
        self.streamed: dict[tuple[str, str], Any] = {}
        #: one project's routes, for the schema only (:func:`site_schema`)
        self.schema_app = project_app(self, None)

    # -- projects ------------------------------------------------------------------------------------
    def view(self, project: Project) -> ProjectView:
        """The open project (opened now if it was not, or was closed when idle)."""
        session = self.server.session(project)
        with self._lock:
            found = self._views.get(project.id)
            if found is not None and found.session is session:
                return found
            view = ProjectView(project, session, self._access(Hub(session)))
            self._views[project.id] = view
            return view

    def way_in(self, view: ProjectView, user: User) -> Access:
        """How ``user`` enters the open project: as its owner, or read-only (the reason named), as the
        accounts say now; a viewer's hub and API see a read-only view of the session, so what they may
        call is what the session's methods declare (:mod:`nodeflow.access`), decided nowhere else."""
        if self.server.projects.can(user, view.project, "write"):
            return view.owner
        reason = read_only_reason(user, view.project)
        with self._lock:
            found = view.viewers.get(reason)
            if found is None:
                found = view.viewers[reason] = self._access(
                    Hub(ReadOnlyView(view.session, reason)))  # type: ignore[arg-type]
            return found

    def _access(self, hub: Hub) -> Access:
        api = project_app(self, hub)
        return Access(hub, api, RequestGuard(api, check_host=False))

    def close_idle(self) -> None:
        closed = self.server.close_idle()
        with self._lock:
            for project_id in closed:
                self._views.pop(project_id, None)

    def watch_idle(self) -> None:
        """Close idle projects now and then, on a thread of its own, until the server stops."""
        def loop() -> None:
            while not self._stop_idle.wait(IDLE_CHECK_SECONDS):
                self.close_idle()

        threading.Thread(target=loop, daemon=True, name="nodeflow-idle").start()

    def close(self) -> None:
        self._stop_idle.set()
        self.server.close()

    # -- uploads and the dataset doctor --------------------------------------------------------------
    def project_data(self, session: Session) -> ProjectData:
        """An open project's uploaded data, under its owner's disk quota and the server's upload limits,
        handed out as the session is: whole to its owner, read-only to a viewer (listing only)."""
        return beside(session, data_of(unwrapped(session), self.server.quota, self.server.upload_limits))

    # -- pages ---------------------------------------------------------------------------------------
    #: the pages and sockets open now, each closed when its credential ends (set by install_multiuser)
    open_pages: OpenPages

    def own_client(self, user: User, project: str | None = None) -> None:
        """The page being built is ``user``'s (an editor: of ``project``); it is closed when the
        credential it was built with ends, or when ``user`` may no longer read ``project``."""
        client = ui.context.client
        self.owners[client.id] = user.name
        client.on_delete(lambda: self.owners.pop(client.id, None))
        self.open_pages.add(client, user, project)


def project_app(mu: MultiUser, hub: Hub | None) -> FastAPI:
    """One project's API: the one-person routes on its hub's session, and its uploaded data. With
    ``hub`` None, an app for the schema only (its routes are read, never called)."""
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    add_api_routes(api, hub or SimpleNamespace(session=None, catalogue_list=[]))  # type: ignore[arg-type]
    session: Session = hub.session if hub is not None else None  # type: ignore[assignment]

    @api.exception_handler(WorkRefused)
    async def work_refused(request: Request, exc: WorkRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    data_routes(api, lambda: mu.project_data(session), mu.uploads)
    return api


class ProjectRouter:
    """ASGI middleware: ``/api/p/{project_id}/...`` goes to that project's API, once the signed-in
    user may read the project (404 otherwise) and, for a change or work, write it (403)."""

    def __init__(self, app: Any, mu: MultiUser) -> None:
        self.app = app
        self.mu = mu

    async def __call__(self, scope, receive, send) -> None:
        streamed = self.mu.streamed.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if streamed is not None:
            await self._streamed(streamed, scope, receive, send)
            return
        found = PROJECT_API.match(scope.get("path", "")) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        user = scope.get("state", {}).get("user")
        if not isinstance(user, User):  # the sign-in gate stands in front; never reached without it
            await PlainTextResponse("401: sign in first", status_code=401)(scope, receive, send)
            return
        project_id, rest = found.group(1), "/api" + (found.group(2) or "")

        def enter() -> Access:
            view = self.mu.view(self.mu.server.project_for(user, project_id))
            return self.mu.way_in(view, user)

        try:  # one hop to a thread: both read the accounts' database
            way = await anyio.to_thread.run_sync(enter)
        except ProjectNotFound as exc:
            await JSONResponse({"detail": str(exc)}, status_code=404)(scope, receive, send)
            return
        except WorkRefused as exc:  # over the person's open projects
            await JSONResponse({"detail": str(exc)}, status_code=exc.status)(scope, receive, send)
            return
        child = {**scope, "path": rest, "raw_path": rest.encode(), "root_path": "",
                 API_BASE: f"/api/p/{project_id}"}
        if rest == "/api/uploads" and scope["method"] == "POST":
            await self._streamed(way.api, child, receive, send)
            return
        await way.guarded(child, receive, send)

    @staticmethod
    async def _streamed(app: Any, scope, receive, send) -> None:
        """A route whose body is multipart and larger reads it itself; the other rules stand."""
        if not isinstance(scope.get("state", {}).get("user"), User):
            await PlainTextResponse("401: sign in first", status_code=401)(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        repeated = twice_given(scope.get("headers", []))
        refused = (400, f"400: the header '{repeated}' is given more than once") if repeated else \
            refusal({**scope, "method": "GET"}, headers, check_host=False)
        if refused is not None:
            await PlainTextResponse(refused[1], status_code=refused[0])(scope, receive, send)
            return
        await app(scope, receive, send)


# -- the site-wide API ------------------------------------------------------------------------------------


class NewProject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(description="1 to 80 printable characters")


class ProjectChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, description="a new title")
    archived: bool | None = Field(None, description="archive (read-only, off the list) or restore")


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(description="the user who may read the project")


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field(description="the project whose open graph becomes the template")
    title: str = Field(description="the template's title")


class OpenTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str | None = Field(None, description="copy into this project of yours (default: a new project)")


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(description="what the token is for, 1 to 64 printable characters")


#: the signed-in user, for a route
Me = Annotated[User, Depends(current_user)]


def project_json(project: Project, user: User) -> dict[str, Any]:
    mine = project.owner == user.name
    return {"id": project.id, "title": project.title, "owner": project.owner, "created": project.created,
            "archived": project.archived, "shared_with": list(project.shared_with) if mine else [],
            "access": "write" if mine and not project.archived else "read", "url": f"/p/{project.id}"}


def _answer_errors(call):
    """Run ``call``; the users module's refusals as HTTP answers (404 hides what may not be read)."""
    try:
        return call()
    except (ProjectNotFound, KeyError) as exc:
        raise HTTPException(404, str(exc.args[0]) if exc.args else str(exc)) from None
    except NotAllowed as exc:
        raise HTTPException(403, str(exc)) from None
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from None
    except WorkRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None


def add_site_routes(mu: MultiUser) -> None:
    server = mu.server
    projects = server.projects
    missing = {404: {"description": "no such project (or one you may not read)"}}
    owner_only = {**missing, 403: {"description": "only the project's owner may do this"}}

    @app.get("/api/me", tags=["site"], summary="Who you are signed in as, and your disk quota")
    def get_me(user: Me) -> dict[str, Any]:
        return {"name": user.name, "admin": user.admin, "disk": {"used": server.quota.usage(user.name),
                                                                  "quota": server.quota.limit}}

    @app.get("/api/projects", tags=["site"], summary="Your projects, archived ones, those shared with you, and "
                                                       "(for an admin) everyone's")
    def get_projects(user: Me) -> dict[str, Any]:
        found = {"mine": [project_json(p, user) for p in projects.mine(user)],
                 "archived": [project_json(p, user) for p in projects.mine(user, archived=True)],
                 "shared": [project_json(p, user) for p in projects.shared_with_me(user)]}
        if user.admin:
            found["everyone"] = [project_json(p, user) for p in projects.everyone(user)]
        return found

    @app.post("/api/projects", tags=["site"], summary="Make a project", responses={
        422: {"description": "a title that is not allowed"}})
    def post_project(user: Me, body: NewProject) -> dict[str, Any]:
        return project_json(_answer_errors(lambda: projects.create(user, body.title)), user)

    @app.get("/api/projects/{project_id}", tags=["site"], summary="One project", responses=missing)
    def get_project(user: Me, project_id: str) -> dict[str, Any]:
        return project_json(_answer_errors(lambda: projects.get(user, project_id)), user)

    @app.patch("/api/projects/{project_id}", tags=["site"], summary="Rename, archive or restore a project",
               responses={**owner_only, 422: {"description": "a title that is not allowed"}})
    def patch_project(user: Me, project_id: str, body: ProjectChange) -> dict[str, Any]:
        def change() -> Project:
            project = projects.get(user, project_id)
            if project.owner != user.name:
                raise NotAllowed(f"only {project.owner} can change project '{project.title}'")
            if body.title is not None:
                project = projects.rename(user, project_id, body.title)
            if body.archived is not None:
                project = projects.archive(user, project_id, body.archived)
            return project
        return project_json(_answer_errors(change), user)

    @app.post("/api/projects/{project_id}/shares", tags=["site"], summary="Let another user read the project",
              responses={**owner_only, 422: {"description": "no such user"}})
    def post_share(user: Me, project_id: str, body: ShareRequest) -> dict[str, Any]:
        return project_json(_answer_errors(lambda: projects.share(user, project_id, body.user)), user)

    @app.delete("/api/projects/{project_id}/shares/{other}", tags=["site"],
                summary="Stop sharing the project with a user", responses=owner_only)
    def delete_share(user: Me, project_id: str, other: str) -> dict[str, Any]:
        return project_json(_answer_errors(lambda: projects.unshare(user, project_id, other)), user)

    @app.get("/api/templates", tags=["site"], summary="The class templates an admin published")
    def get_templates(user: Me) -> list[dict[str, Any]]:
        return [vars(t) for t in projects.templates()]

    @app.post("/api/templates", tags=["site"], summary="Publish a project's open graph as a class template "
                                                        "(admins)", responses={**missing, 403: {
                                                            "description": "only an admin can publish"}, 422: {
                                                            "description": "a title that is not allowed"}})
    def post_template(user: Me, body: PublishRequest) -> dict[str, Any]:
        def publish():
            if not user.admin:
                raise NotAllowed("only an admin can publish a class template")
            project = projects.get(user, body.project)
            return projects.publish_template(user, mu.view(project).session.document.graph, body.title)
        return vars(_answer_errors(publish))

    @app.delete("/api/templates/{template_id}", tags=["site"], summary="Take a class template off the list "
                "(admins; the copies stay)", responses={404: {"description": "no such template"},
                                                        403: {"description": "only an admin can unpublish"}})
    def delete_template(user: Me, template_id: str) -> dict[str, Any]:
        _answer_errors(lambda: projects.unpublish_template(user, template_id))
        return {"removed": template_id}

    @app.post("/api/templates/{template_id}/open", tags=["site"],
              summary="Your own copy of a class template: a graph in one of your projects, or a new project",
              responses={404: {"description": "no such template or project"},
                         403: {"description": "the project is not yours to change"}})
    def open_template(user: Me, template_id: str, body: Annotated[OpenTemplate | None, Body()] = None) -> dict:
        def copy():
            project, path = projects.open_template(user, template_id, body.project if body else None)
            session = server.open_sessions().get(project.id)
            if session is not None:  # open already: show the copy there
                session.document.open(path)
            return project, path
        project, path = _answer_errors(copy)
        return {"project": project_json(project, user), "graph": f"graphs/{path.name}"}

    @app.get("/api/queue", tags=["site"], summary="The machine's queue: your jobs (everyone's, for an admin), "
                                                    "running first, then in the order they will start")
    def get_queue(user: Me) -> list[dict[str, Any]]:
        return [{**entry.to_json(), "title": server.project_title(user, entry.project)}
                for entry in server.queue(user)]

    @app.post("/api/queue/{project_id}/{run_id}/cancel", tags=["site"],
              summary="Cancel a queued run, or stop a running one: yours, or anyone's for an admin",
              responses={404: {"description": "no such project or run"},
                         403: {"description": "not yours to cancel"}})
    def cancel_queued(user: Me, project_id: str, run_id: str) -> dict[str, Any]:
        return {"project": project_id, "run": run_id,
                "status": _answer_errors(lambda: server.cancel(user, project_id, run_id))}

    @app.get("/api/tokens", tags=["site"], summary="Your API tokens (never their secrets)")
    def get_tokens(user: Me) -> list[dict[str, Any]]:
        return [vars(t) for t in server.accounts.tokens(user.name)]

    @app.post("/api/tokens", tags=["site"], summary="A new API token: its secret is in this answer only",
              responses={422: {"description": "a label that is not allowed"}})
    def post_token(user: Me, body: NewToken) -> dict[str, Any]:
        info, secret = _answer_errors(lambda: server.accounts.create_token(user.name, body.label))
        return {**vars(info), "token": secret}

    @app.delete("/api/tokens/{token_id}", tags=["site"], summary="Revoke one of your API tokens",
                responses={404: {"description": "no token of yours with that id"}})
    def delete_token(user: Me, token_id: str) -> dict[str, Any]:
        def revoke() -> None:
            try:
                server.accounts.revoke_token(user.name, token_id)
            except AccountError as exc:
                raise KeyError(str(exc)) from None
        _answer_errors(revoke)
        return {"revoked": token_id}

    @app.get("/api/openapi.json", tags=["site"], summary="This API's OpenAPI schema")
    def get_schema(user: Me) -> dict[str, Any]:
        return site_schema(mu)


def site_schema(mu: MultiUser) -> dict[str, Any]:
    """The whole API: the site's routes, and each project's under ``/api/p/{project_id}``."""
    routes = [r for r in app.routes if getattr(r, "path", "").startswith("/api/")
              and getattr(r, "include_in_schema", False)]
    schema = get_openapi(title="nodeflow server API", version="1", routes=routes,
                         description="Projects, class templates, the machine's queue and API tokens; each "
                                     "project's graph, runs and data under /api/p/{project_id}.")
    per_project = get_openapi(title="", version="1", routes=[r for r in mu.schema_app.routes
                                                             if getattr(r, "path", "").startswith("/api/")])
    parameter = {"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "the project's id (GET /api/projects)"}
    for path, item in per_project["paths"].items():
        for method, operation in item.items():
            operation["parameters"] = [parameter, *operation.get("parameters", [])]
            answers = operation.setdefault("responses", {})
            answers.setdefault("404", {"description": "no such project (or one you may not read)"})
            answers.setdefault("403", {"description": "the project is open to you read-only, and this changes it "
                                                     "or starts work"})
            if path in ("/api/run", "/api/sweep"):
                answers.setdefault("429", {"description": "you already have as many runs waiting as you may"})
                answers.setdefault("507", {"description": "your disk quota is full"})
        schema["paths"]["/api/p/{project_id}" + path[len("/api"):]] = item
    schema.setdefault("components", {}).setdefault("schemas", {}).update(
        per_project.get("components", {}).get("schemas", {}))
    for item in schema["paths"].values():
        for operation in item.values():
            operation.setdefault("responses", {}).setdefault("401", {"description": "not signed in"})
    return document_refusals(schema)


# -- the websocket ----------------------------------------------------------------------------------------


def guard_sockets(mu: MultiUser) -> None:
    """NiceGUI's socket.io server attaches a socket to whichever page client id it names, and takes
    events for any client id: let a socket attach only to the clients of its own user, and carry
    events only for the client it attached to, and only while the credentials of the socket and of
    the page still stand (:meth:`OpenPages.allows`: asked on each event, so none runs after a
    sign-out, a new password, a removal or an unshare, even before the page is closed)."""
    sio = core.sio
    if not hasattr(sio, "nodeflow_handlers"):  # NiceGUI's own, kept once (a test process installs this often)
        sio.nodeflow_handlers = dict(sio.handlers["/"])
    handlers = sio.nodeflow_handlers
    connect, handshake, disconnect = handlers["connect"], handlers["handshake"], handlers["disconnect"]
    pages = mu.open_pages

    def owns(sid: str, client_id: Any) -> bool:
        user = pages.socket_user(sid)
        return user is not None and pages.owner(client_id) == user

    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        import socketio

        state = environ.get("asgi.scope", {}).get("state", {})
        user = state.get("user")
        if not isinstance(user, User):
            raise socketio.exceptions.ConnectionRefusedError("sign in first")
        pages.connected(sid, user, state.get("credential"))
        client_id = parse_qs(environ.get("QUERY_STRING", "")).get("client_id", [None])[0]
        if client_id is not None and not (owns(sid, client_id) and pages.allows(sid, client_id)):
            pages.disconnected(sid)
            # NiceGUI's own words for a page it does not know, on which its script reloads the page: a
            # page closed before its socket came reloads through the sign-in gate, and nothing is told
            # about whose page a client id is
            raise socketio.exceptions.ConnectionRefusedError("Implicit handshake failed")
        return await connect(sid, environ)

    async def on_handshake(sid: str, data: dict[str, Any]) -> bool:
        if not isinstance(data, dict) or not owns(sid, data.get("client_id")) or \
                not pages.allows(sid, data["client_id"]):
            return False
        return await handshake(sid, data)

    def on_disconnect(sid: str, *args: Any) -> Any:
        pages.disconnected(sid)
        return disconnect(sid)

    def only_its_own(original):
        def handler(sid: str, msg: Any) -> Any:
            client_id = msg.get("client_id") if isinstance(msg, dict) else None
            if isinstance(client_id, str) and client_id in sio.rooms(sid) and owns(sid, client_id) \
                    and pages.allows(sid, client_id):
                return original(sid, msg)
            return None
        return handler

    sio.on("connect", on_connect)
    sio.on("handshake", on_handshake)
    sio.on("disconnect", on_disconnect)
    for name in ("event", "javascript_response", "ack", "log"):
        sio.on(name, only_its_own(handlers[name]))
