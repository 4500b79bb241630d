"""The pages of a shared server (``nodeflow serve --users``): the project list a person lands on
after signing in, and what the editor of one project adds to the one-person editor (the way back,
uploads with their progress and the dataset doctor's findings, publishing a class template)."""

from __future__ import annotations

import asyncio
import json
import time
from html import escape
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from nicegui import ui

from nodeflow.words import format_bytes
from nodeflow.server import WorkRefused
from nodeflow.users import AccountError, NotAllowed, Project, ProjectNotFound, User

from .app import EditorPage
from .assignments_page import HandInControls
from .multiuser import MultiUser, ProjectView, read_only_reason


def not_found_page(message: str, title: str = "Not found", status: int = 404) -> HTMLResponse:
    """Another person's project by its address, or one that does not exist: the same page (and with
    another title, a project that cannot be opened now)."""
    return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · nodeflow
</title></head><body style="font-family: system-ui, sans-serif; margin: 3rem"><h1>{escape(title)}</h1>
<p role="alert">{escape(message)}</p><p><a href="/">Your projects</a></p></body></html>""", status_code=status)


SIGN_OUT = ('<form method="post" action="/logout" style="margin:0"><button type="submit" class="nf-sign-out" '
            'style="background:none;border:1px solid #fff8;color:inherit;border-radius:4px;padding:2px 10px;'
            'cursor:pointer">Sign out</button></form>')


def add_pages(mu: MultiUser) -> None:
    server = mu.server

    @ui.page("/")
    def projects_page(request: Request) -> None:
        user = request.state.user
        mu.own_client(user)
        ProjectList(mu, user)

    @ui.page("/p/{project_id}")
    def project_page(request: Request, project_id: str) -> Any:
        user = request.state.user
        try:
            project = server.project_for(user, project_id)
        except ProjectNotFound as exc:
            return not_found_page(str(exc))
        try:
            view = mu.view(project)
        except WorkRefused as exc:  # over the person's open projects: say so, as a page
            return not_found_page(str(exc), title="Too many projects open", status=exc.status)
        mu.own_client(user, project.id)  # closed when the user may no longer read it (an unshare)
        way = mu.way_in(view, user)
        writable = way is view.owner
        server.hold(project.id)
        ui.context.client.on_delete(lambda: server.let_go(project.id))
        page = EditorPage(way.hub, read_only=None if writable else read_only_reason(user, project))
        ProjectHeader(mu, page, view, user, writable)
        if writable and getattr(mu, "handins", None) is not None:  # a reader sees no hand-in (and may make none)
            page.inspector.add_extra(HandInControls(mu, user, project.id).draw)
        return None


class ProjectHeader:
    """What the editor of a project adds to its header: the way back to the project list (where one
    signs out), the project's title, uploads, and publishing as a class template (admins)."""

    def __init__(self, mu: MultiUser, page: EditorPage, view: ProjectView, user: User, writable: bool) -> None:
        self.mu = mu
        self.view = view
        self.user = user
        with page.header:
            back = ui.link("← Projects", "/").classes("text-white text-sm q-mr-sm nf-back")
            back.move(target_index=1)
            # a long title gives way to the buttons (cut, whole in its tooltip), as the file name does
            title = ui.label(view.project.title).classes("text-sm text-weight-medium q-mr-sm nf-project-title")
            title._props["title"] = view.project.title
            title.move(target_index=2)
            if writable:
                ui.button("Upload data", icon="upload", on_click=lambda: self.upload.open()) \
                    .props("flat dense color=white no-caps").classes("nf-upload-button nf-compact") \
                    .tooltip("Upload data: a zip, or image files and folders, into this project's data/")
            if user.admin:
                ui.button("Publish", icon="school", on_click=self.publish).props("flat dense color=white no-caps") \
                    .classes("nf-compact") \
                    .tooltip("Publish this graph as a class template: each person who opens it gets a copy")
        if writable:
            self.upload = UploadPanel(mu, view)

    def publish(self) -> None:
        def do_publish() -> None:
            try:
                template = self.mu.server.projects.publish_template(self.user, self.view.session.document.graph,
                                                                    title.value or "")
            except (AccountError, NotAllowed) as exc:
                problem.set_text(str(exc))
                return
            dialog.close()
            ui.notify(f"Published '{template.title}': everyone sees it under Class templates", type="positive")

        with ui.dialog() as dialog, ui.card().classes("w-96 nf-publish"):
            ui.label("Publish as a class template").classes("text-h6")
            title = ui.input("title", value=self.view.session.document.graph.name or self.view.project.title).classes("w-full")
            problem = ui.label("").classes("text-negative text-sm")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Publish", on_click=do_publish)
        dialog.open()


class UploadPanel:
    """Uploads into the project's data folder: a zip, or image files and folders, dropped anywhere on
    the page or chosen; a progress bar while they travel; then what arrived, and the dataset doctor's
    findings. The browser posts to the project's ``/uploads`` route, which does every check."""

    def __init__(self, mu: MultiUser, view: ProjectView) -> None:
        self.mu = mu
        self.view = view
        url = f"/api/p/{view.project.id}/uploads"
        with ui.dialog() as self.dialog, ui.card().classes("w-[36rem] nf-upload"):
            ui.label("Upload data").classes("text-h6")
            ui.label("Drop a zip, or image files or folders, here or anywhere on the page. Each class in a "
                     "folder of its own (cat/, dog/), or train/ validation/ test/ with class folders inside.") \
                .classes("text-sm text-grey-8")
            self.name = ui.input("folder name in data/ (default: the zip's or folder's name)") \
                .classes("w-full nf-upload-name").props("dense")
            with ui.element("div").classes("nf-drop w-full"):
                ui.label("Drop files here").classes("text-grey-7")
                with ui.row().classes("gap-2"):
                    ui.button("Choose a zip or images", icon="attach_file",
                              on_click=lambda: ui.run_javascript("nfUploadChoose(false)")).props("outline no-caps dense")
                    ui.button("Choose a folder", icon="folder",
                              on_click=lambda: ui.run_javascript("nfUploadChoose(true)")).props("outline no-caps dense")
            self.progress = ui.linear_progress(value=0, show_value=False, size="10px").classes("nf-upload-progress")
            self.progress.set_visibility(False)
            self.status = ui.label("").classes("text-sm nf-upload-status").style("overflow-wrap: anywhere")
            self.result = ui.column().classes("w-full gap-1 nf-upload-result")
            with ui.row().classes("w-full justify-end"):
                ui.button("Close", on_click=self.dialog.close).props("flat")
        ui.add_body_html(UPLOAD_JS.replace("__URL__", json.dumps(url)))
        ui.add_css(UPLOAD_CSS)
        ui.on("nf_upload_started", self.started)
        ui.on("nf_upload_progress", self.moved, throttle=0.2)
        ui.on("nf_upload_done", self.done)

    def open(self) -> None:
        self.dialog.open()

    def started(self, e) -> None:
        self.dialog.open()
        self.result.clear()
        self.progress.set_visibility(True)
        self.progress.set_value(0)
        self.status.set_text(f"Uploading {e.args.get('what', 'files')}…")

    def moved(self, e) -> None:
        loaded, total = e.args.get("loaded", 0), e.args.get("total") or 0
        if total:
            self.progress.set_value(min(1.0, loaded / total))
            self.status.set_text(f"Uploading: {format_bytes(loaded)} of {format_bytes(total)}")

    async def done(self, e) -> None:
        status, body = e.args.get("status"), e.args.get("body") or ""
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {"detail": body[:300] or "the upload did not reach the server"}
        if status != 200:
            self.progress.set_visibility(False)
            detail = answer.get("detail")
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
            self.status.set_text(message or f"the upload failed ({status})")
            self.status.classes(add="text-negative")
            return
        self.progress.set_value(1.0)
        self.status.classes(remove="text-negative")
        classes = ", ".join(f"{name} {count}" for name, count in answer["classes"].items())
        self.status.set_text(f"Saved {answer['path']}: {answer['images']} images ({format_bytes(answer['bytes'])})"
                             + (f" in {len(answer['classes'])} classes: {classes}" if classes else "")
                             + (f"; {answer['loose']} not in a class folder" if answer["loose"] else "")
                             + (f"; left out {len(answer['skipped'])} system files" if answer["skipped"] else ""))
        self.result.clear()
        with self.result:
            ui.label(f"Pick it in a dataset node's folder picker: workspace / {answer['path']}") \
                .classes("text-sm text-grey-8 nf-upload-pick")
            note = ui.label("The dataset doctor is looking at it…").classes("text-sm nf-doctor-status")
        try:
            found = await asyncio.to_thread(self.mu.project_data(self.view.session).doctor, answer["folder"])
        except (LookupError, ValueError) as exc:
            note.set_text(str(exc.args[0]) if exc.args else str(exc))
            return
        note.set_text("The dataset doctor found:")
        with self.result:
            for line in doctor_lines(found):
                ui.label(line).classes("text-sm nf-doctor-line")


def doctor_lines(found: dict[str, Any]) -> list[str]:
    """The doctor's findings as a person reads them, one line per check."""
    lines = []
    if found["balance"]:  # a row: the class, its images per split, its share of all images
        lines.append("class balance: " + ", ".join(
            f"{row['class']} {sum(v for k, v in row.items() if k not in ('class', 'share'))} ({row['share']:.0%})"
            for row in found["balance"]))
    names = {"unreadable": "unreadable files", "tiny": "tiny images", "extreme_aspect": "extreme aspect ratios",
             "exact_duplicates": "groups of exact duplicates", "near_duplicates": "near duplicates",
             "label_suspects": "suspected label errors",
             "label_conflicts": "label conflicts (one image under two classes)"}
    for kind, count in found["counts"].items():
        rows = found["findings"].get(kind) or []
        example = ""
        if rows:
            first = rows[0]
            files = first.get("files") or [first.get("file")]
            example = " (e.g. " + ", ".join(str(f) for f in files[:3] if f) + ")"
        lines.append(f"{names.get(kind, kind)}: {count}" + (example if count else ""))
    return lines


class ProjectList:
    """The first page after signing in: your projects (new, rename, archive, open), those shared with
    you, class templates, the machine's queue, everyone's projects for an admin, and API tokens."""

    def __init__(self, mu: MultiUser, user: User) -> None:
        self.mu = mu
        self.server = mu.server
        self.user = user
        ui.page_title("Projects · nodeflow")
        ui.add_css(LIST_CSS)
        with ui.header(elevated=False).classes("items-center gap-2 px-4 py-2 bg-indigo-9"):
            ui.label("nodeflow").classes("text-h6 text-weight-bold")
            ui.label("Projects").classes("text-subtitle1 opacity-80")
            ui.space()
            used = self.server.quota.usage(user.name)
            quota = self.server.quota.limit
            ui.label(f"{format_bytes(used) if used else '0 B'}" + (f" of {format_bytes(quota)}" if quota else "")
                     + " on disk") \
                .classes("text-sm opacity-80 nf-disk")
            ui.label(user.name + (" (admin)" if user.admin else "")).classes("text-sm nf-user")
            ui.html(SIGN_OUT, sanitize=False)
        with ui.column().classes("w-full max-w-5xl mx-auto p-4 gap-4"):
            with ui.card().classes("w-full"):
                ui.label("Your projects").classes("text-h6")
                with ui.row().classes("items-center gap-2"):
                    self.new_title = ui.input("New project").props("dense outlined").classes("w-72 nf-new-title") \
                        .on("keydown.enter", self.create)
                    ui.button("Create", icon="add", on_click=self.create).props("unelevated no-caps")
                self.mine = ui.column().classes("w-full gap-1 nf-mine")
            with ui.card().classes("w-full"):
                ui.label("Shared with you").classes("text-h6")
                self.shared = ui.column().classes("w-full gap-1 nf-shared")
            with ui.card().classes("w-full"):
                ui.label("Class templates").classes("text-h6")
                self.templates = ui.column().classes("w-full gap-1 nf-class-templates")
            with ui.card().classes("w-full"):
                ui.label("The machine's queue" + ("" if user.admin else ": your runs")).classes("text-h6")
                self.queue = ui.column().classes("w-full gap-1 nf-queue")
            if user.admin:
                with ui.card().classes("w-full"):
                    ui.label("Everyone's projects (open read-only)").classes("text-h6")
                    self.everyone = ui.column().classes("w-full gap-1 nf-everyone")
            with ui.card().classes("w-full"):
                ui.label("API tokens").classes("text-h6")
                ui.label("For scripts: send 'Authorization: Bearer TOKEN'. A token is shown once, when made.") \
                    .classes("text-sm text-grey-8")
                with ui.row().classes("items-center gap-2"):
                    self.token_label = ui.input("What it is for").props("dense outlined").classes("w-72")
                    ui.button("Make a token", icon="key", on_click=self.make_token).props("outline no-caps")
                self.tokens = ui.column().classes("w-full gap-1 nf-tokens")
        self.refresh()
        self.queue_seen: Any = None
        self.show_queue()
        ui.timer(2.0, self.show_queue)

    def refresh(self) -> None:
        projects = self.server.projects
        self.mine.clear()
        with self.mine:
            mine = projects.mine(self.user)
            if not mine:
                ui.label("No projects yet: make one, or open a class template.").classes("text-grey-7 text-sm")
            for project in mine:
                self.project_row(project)
            archived = projects.mine(self.user, archived=True)
            if archived:
                with ui.expansion(f"Archived ({len(archived)})").classes("w-full nf-archived"):
                    for project in archived:
                        with ui.row().classes("items-center gap-2 nf-project").props(f"data-id={project.id}"):
                            ui.link(project.title, f"/p/{project.id}").classes("text-body1")
                            ui.button("Restore", on_click=lambda p=project: self.archive(p, False)) \
                                .props("flat dense no-caps")
        self.shared.clear()
        with self.shared:
            shared = projects.shared_with_me(self.user)
            if not shared:
                ui.label("Nothing shared with you.").classes("text-grey-7 text-sm")
            for project in shared:
                with ui.row().classes("items-center gap-2 nf-project").props(f"data-id={project.id}"):
                    ui.link(project.title, f"/p/{project.id}").classes("text-body1")
                    ui.label(f"{project.owner}'s, read-only").classes("text-sm text-grey-7")
        self.templates.clear()
        with self.templates:
            found = projects.templates()
            if not found:
                ui.label("No class templates yet" + (": open a project and press Publish." if self.user.admin
                                                     else ".")).classes("text-grey-7 text-sm")
            for template in found:
                with ui.row().classes("items-center gap-2 nf-template-row"):
                    ui.label(template.title).classes("text-body1")
                    ui.label(f"by {template.author}").classes("text-sm text-grey-7")
                    ui.button("Open my copy", icon="content_copy", on_click=lambda t=template: self.copy(t)) \
                        .props("flat dense no-caps")
                    if self.user.admin:
                        ui.button("Remove", on_click=lambda t=template: self.unpublish(t)).props("flat dense no-caps")
        if self.user.admin:
            self.everyone.clear()
            with self.everyone:
                for project in projects.everyone(self.user):
                    with ui.row().classes("items-center gap-2 nf-project").props(f"data-id={project.id}"):
                        ui.label(project.owner).classes("text-sm text-weight-medium w-24")
                        ui.link(project.title, f"/p/{project.id}").classes("text-body1")
                        if project.archived:
                            ui.label("archived").classes("text-sm text-grey-7")
        self.tokens.clear()
        with self.tokens:
            for token in self.server.accounts.tokens(self.user.name):
                with ui.row().classes("items-center gap-2"):
                    ui.label(token.label).classes("text-body2")
                    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(token.last_used)) if token.last_used \
                        else "never used"
                    ui.label(f"{token.id} · {used}").classes("text-sm text-grey-7")
                    ui.button("Revoke", on_click=lambda t=token: self.revoke(t.id)).props("flat dense no-caps")

    def project_row(self, project: Project) -> None:
        with ui.row().classes("items-center gap-2 nf-project").props(f"data-id={project.id}"):
            ui.link(project.title, f"/p/{project.id}").classes("text-body1 nf-project-link")
            ui.label(time.strftime("%Y-%m-%d", time.localtime(project.created))).classes("text-sm text-grey-7")
            if project.shared_with:
                ui.label("shared with " + ", ".join(project.shared_with)).classes("text-sm text-grey-7")
            ui.button("Rename", on_click=lambda: self.rename(project)).props("flat dense no-caps")
            ui.button("Share", on_click=lambda: self.share(project)).props("flat dense no-caps")
            ui.button("Archive", on_click=lambda: self.archive(project, True)).props("flat dense no-caps")

    # -- actions -------------------------------------------------------------------------------------
    def _try(self, call, done: str | None = None, refresh: bool = True) -> Any:
        """``call``, its refusal as a warning; then the lists drawn again (not when the page moves on:
        the button that called is gone with them)."""
        try:
            result = call()
        except (AccountError, NotAllowed, ProjectNotFound) as exc:
            ui.notify(str(exc), type="warning")
            return None
        if done:
            ui.notify(done, type="positive", timeout=1500)
        if refresh:
            self.refresh()
        return result

    def create(self) -> None:
        project = self._try(lambda: self.server.projects.create(self.user, self.new_title.value or ""), refresh=False)
        if project is not None:
            ui.navigate.to(f"/p/{project.id}")

    def rename(self, project: Project) -> None:
        def do() -> None:
            if self._try(lambda: self.server.projects.rename(self.user, project.id, title.value or "")):
                dialog.close()

        with ui.dialog() as dialog, ui.card().classes("w-96"):
            ui.label(f"Rename '{project.title}'").classes("text-h6")
            title = ui.input("title", value=project.title).classes("w-full").on("keydown.enter", do)
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Rename", on_click=do)
        dialog.open()

    def share(self, project: Project) -> None:
        def do() -> None:
            if self._try(lambda: self.server.projects.share(self.user, project.id, (other.value or "").strip()),
                         f"Shared with {other.value}, read-only"):
                dialog.close()

        with ui.dialog() as dialog, ui.card().classes("w-96"):
            ui.label(f"Share '{project.title}' read-only").classes("text-h6")
            other = ui.input("user name").classes("w-full").on("keydown.enter", do)
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Share", on_click=do)
        dialog.open()

    def archive(self, project: Project, archived: bool) -> None:
        self._try(lambda: self.server.projects.archive(self.user, project.id, archived),
                  f"{'Archived' if archived else 'Restored'} '{project.title}'")

    def copy(self, template) -> None:
        found = self._try(lambda: self.server.projects.open_template(self.user, template.id), refresh=False)
        if found is not None:
            ui.navigate.to(f"/p/{found[0].id}")

    def unpublish(self, template) -> None:
        self._try(lambda: self.server.projects.unpublish_template(self.user, template.id),
                  f"Removed the template '{template.title}'; the copies stay")

    def make_token(self) -> None:
        found = self._try(lambda: self.server.accounts.create_token(self.user.name, self.token_label.value or ""))
        if found is None:
            return
        with ui.dialog() as dialog, ui.card().classes("w-[34rem]"):
            ui.label(f"Your token '{found[0].label}'").classes("text-h6")
            ui.label("Copy it now: it is not shown again.").classes("text-sm")
            ui.label(found[1]).classes("font-mono text-sm nf-token-secret").style("overflow-wrap: anywhere")
            ui.button("Done", on_click=dialog.close).props("flat")
        dialog.open()

    def revoke(self, token_id: str) -> None:
        self._try(lambda: self.server.accounts.revoke_token(self.user.name, token_id), "Revoked")

    def show_queue(self) -> None:
        entries = self.server.queue(self.user)
        waiting = sum(1 for e in self.server.queue() if e.position is not None)  # everyone's: a count, no names
        seen = [(e.project, e.runs, e.position, waiting) for e in entries]
        if seen == self.queue_seen:
            return
        self.queue_seen = seen
        self.queue.clear()
        with self.queue:
            if not entries:
                ui.label("Nothing running or waiting.").classes("text-grey-7 text-sm")
            for entry in entries:
                title = self.server.project_title(self.user, entry.project)
                runs = ", ".join(str(r) for r in entry.runs)
                with ui.row().classes("items-center gap-2 nf-queue-row"):
                    ui.label("running" if entry.position is None else f"#{entry.position} of {waiting} waiting") \
                        .classes("text-weight-medium w-36 nf-queue-place")
                    if self.user.admin:
                        ui.label(entry.user).classes("text-sm w-24")
                    ui.label(f"{title or entry.project} · run {runs}").classes("text-sm")
                    if self.user.admin or entry.user == self.user.name:
                        ui.button("Cancel", on_click=lambda e=entry: self.cancel(e)).props("flat dense no-caps")

    def cancel(self, entry) -> None:
        for run_id in entry.runs:
            try:
                status = self.server.cancel(self.user, entry.project, run_id)
            except (ProjectNotFound, NotAllowed, KeyError) as exc:
                ui.notify(str(exc), type="warning")
                return
        ui.notify(f"Run {', '.join(map(str, entry.runs))}: {status}", type="info")
        self.queue_seen = None
        self.show_queue()


LIST_CSS = """
.nf-project a, .nf-project .q-link { font-weight: 500; }
.nicegui-content { padding: 0 !important; }
"""

UPLOAD_CSS = """
.nf-drop { border: 2px dashed #9fa8da; border-radius: 8px; padding: 16px; display: flex; flex-direction: column;
  align-items: center; gap: 8px; background: #f5f6ff; }
body.nf-dragging .nf-drop, body.nf-dragging .nf-editor { outline: 3px dashed #3f51b5; outline-offset: -3px; }
"""

#: gathers dropped or chosen files (folders walked through, each file with its path inside what was
#: dropped), posts them as multipart to the project's upload route, and tells the page how it goes
UPLOAD_JS = """
<script>
(() => {
  const url = __URL__;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  const readAll = (reader) => new Promise((resolve, reject) => {
    const all = []; const next = () => reader.readEntries((batch) => {
      if (!batch.length) { resolve(all); return; } all.push(...batch); next(); }, reject); next(); });
  async function walk(entry, prefix, out) {
    if (entry.isFile) {
      out.push(await new Promise((resolve, reject) => entry.file((f) => resolve({file: f, path: prefix + f.name}), reject)));
    } else if (entry.isDirectory) {
      for (const child of await readAll(entry.createReader())) await walk(child, prefix + entry.name + "/", out);
    }
  }
  function nameFor(items) {
    const typed = document.querySelector(".nf-upload-name input");
    if (typed && typed.value.trim()) return typed.value.trim();
    const first = items[0].path;
    const top = first.includes("/") ? first.split("/")[0] : (items.length === 1 ? first.replace(/\\.zip$/i, "") : "");
    const cleaned = top.replace(/[^\\w .-]+/g, "-").replace(/^[.\\s-]+|[\\s.]+$/g, "").slice(0, 60);
    return cleaned || ("upload-" + new Date().toISOString().slice(0, 19).replace(/[-:T]/g, ""));
  }
  function send(items) {
    if (!items.length) return;
    const name = nameFor(items);
    const form = new FormData();
    for (const item of items) form.append("files", item.file, item.path);
    const what = items.length === 1 ? items[0].path : items.length + " files";
    emitEvent("nf_upload_started", {what: what, name: name});
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url + "?rename=true&name=" + encodeURIComponent(name));
    xhr.upload.onprogress = (e) => emitEvent("nf_upload_progress", {loaded: e.loaded, total: e.total});
    xhr.onload = () => emitEvent("nf_upload_done", {status: xhr.status, body: xhr.responseText});
    xhr.onerror = () => emitEvent("nf_upload_done", {status: 0, body: ""});
    xhr.send(form);
  }
  window.nfUploadChoose = (folder) => {
    const input = document.createElement("input");
    input.type = "file"; input.multiple = true;
    if (folder) input.webkitdirectory = true; else input.accept = ".zip,image/*";
    input.className = folder ? "nf-upload-folder-input" : "nf-upload-files-input";
    input.style.display = "none";
    input.addEventListener("change", () => {
      send(Array.from(input.files).map((f) => ({file: f, path: f.webkitRelativePath || f.name})));
      input.remove();
    });
    document.body.appendChild(input);
    input.click();
  };
  window.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault(); e.stopPropagation(); document.body.classList.add("nf-dragging");
  }, true);
  window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("nf-dragging"); }, true);
  window.addEventListener("drop", async (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault(); e.stopPropagation(); document.body.classList.remove("nf-dragging");
    const entries = Array.from(e.dataTransfer.items || []).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    const items = [];
    if (entries.length) { for (const entry of entries) await walk(entry, "", items); }
    else items.push(...Array.from(e.dataTransfer.files).map((f) => ({file: f, path: f.name})));
    send(items);
  }, true);
})();
</script>
"""
