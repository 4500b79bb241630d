"""The editor's Try it tab: for a node that gives a trained model (a Trainer, a Linear classifier),
drop, paste or choose an image and see its most probable classes as bars, and the Grad-CAM overlay of
the top class beside the picture. The model runs in a process of its own (:mod:`nodeflow.trying`);
the first picture says the model is being loaded. A read-only page is told it may not (trying spends
the owner's machine)."""

from __future__ import annotations

import base64
from typing import Any

from nicegui import ui
from nicegui.run import io_bound

from nodeflow.access import Refused, unwrapped
from nodeflow.trying import MAX_PICTURE_BYTES, Picture, TryRefused, shown_name

#: classes shown as bars
TOP = 5
#: pasting an image anywhere on the page, while the Try it tab shows a model, hands it to the uploader
PASTE_JS = """
if (!window.nfTryPaste) {
  window.nfTryPaste = true;
  document.addEventListener("paste", (event) => {
    const box = document.querySelector(".nf-try-upload");
    const given = event.clipboardData ? [...event.clipboardData.files] : [];
    const files = given.filter((f) => f.type.startsWith("image/"));
    if (!box || !box.offsetParent || !files.length) return;
    getElement(box.id.replace(/^c/, "")).$refs.qRef.addFiles(files);
    event.preventDefault();
  });
}
"""

#: the uploader's header: what to do and a button that opens the picker (Quasar's own adds a byte count and a
#: percentage, "0.0B / 0.00%" before any picture, which say nothing here: a picture is sent whole at once)
UPLOAD_HEADER = """
<div class="row no-wrap items-center q-pa-sm q-gutter-xs nf-try-header">
  <div class="col q-uploader__title">Drop, paste or choose an image</div>
  <q-btn v-if="props.canAddFiles" type="a" icon="add_photo_alternate" aria-label="Choose an image"
         @click="props.pickFiles" round dense flat>
    <q-uploader-add-trigger />
  </q-btn>
</div>
"""


def tryable(session: Any, node_id: str | None) -> bool:
    """Whether ``node_id`` is a node of the open graph whose type gives a trained model to try."""
    graph = session.document.graph
    if node_id is None or not graph.has_node(node_id):
        return False
    try:
        node_cls = unwrapped(session).registry.get(graph.node(node_id).type)  # the catalogue: read only
    except KeyError:
        return False
    return getattr(node_cls, "predictor", None) is not None


class TryItPanel:
    """The tab's content for the node selected now (:meth:`show`)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.node_id: str | None = None
        #: the node whose model has answered in this tab (the next picture needs no loading)
        self.warm: set[str] = set()
        with ui.column().classes("w-full gap-2 nf-try") as self.root:
            self.title = ui.label("Select a Trainer or a Linear classifier to try its model on your images.") \
                .classes("text-sm nf-try-title")
            self.upload = ui.upload(auto_upload=True, max_file_size=MAX_PICTURE_BYTES, on_upload=self._received) \
                .props('accept="image/*" flat bordered hide-upload-btn').classes("w-full nf-try-upload")
            self.upload.add_slot("header", UPLOAD_HEADER)
            self.status = ui.label("").classes("text-xs text-grey-8 nf-try-status")
            self.result = ui.column().classes("w-full gap-1 nf-try-result")
        self.upload.set_visibility(False)
        ui.run_javascript(PASTE_JS)

    def show(self, node_id: str | None) -> None:
        """Point the tab at ``node_id`` (the selection), or tell what to select."""
        if node_id == self.node_id:
            return
        self.node_id = node_id if tryable(self.session, node_id) else None
        self.result.clear()
        self.status.set_text("")
        if self.node_id is None:
            self.title.set_text("Select a Trainer or a Linear classifier to try its model on your images.")
            self.upload.set_visibility(False)
            return
        title = self.session.document.graph.node(self.node_id).title
        named = f"'{self.node_id}'" + (f" ({title})" if title and title != self.node_id else "")
        self.title.set_text(f"Try the model of {named}: drop, paste or choose an image. The model it trained "
                            "answers; a node that has not trained yet asks to be run first.")
        self.upload.set_visibility(True)

    async def _received(self, event: Any) -> None:
        node_id = self.node_id
        if node_id is None:
            return
        data = await event.file.read()
        picture = Picture(shown_name(event.file.name, 0), data)
        self.upload.reset()
        first = node_id not in self.warm
        self.status.set_text(f"Loading the model of '{node_id}' (the first image takes longer)…" if first
                             else "Classifying…")
        self.result.clear()
        try:
            found = await io_bound(self.session.predict, node_id, [picture], True, TOP)
        except (TryRefused, Refused) as exc:
            self.status.set_text(str(exc))
            self.status.classes(add="text-negative")
            return
        self.status.classes(remove="text-negative")
        self.warm.add(node_id)
        if node_id != self.node_id:
            return  # another node was selected meanwhile
        self._draw(picture, found)

    def _draw(self, picture: Picture, found: dict[str, Any]) -> None:
        result = found["results"][0]
        words = f"{picture.name}: {result['classes'][0]['label']}"
        words += " · model loaded" if found["loaded"] else ""
        words += f" · {found['seconds'] * 1000:.0f} ms"
        self.status.set_text(words)
        overlay = self.session.predicted_overlay(result["overlay"]) if result.get("overlay") else None
        with self.result:
            if found.get("stale"):
                ui.label(found["note"]).classes("text-xs text-orange-9 nf-try-stale")
            with ui.row().classes("w-full gap-2 no-wrap"):
                ui.image(_data_url(picture.data)).classes("w-40 h-40 nf-try-image").props("fit=contain")
                if overlay is not None:
                    ui.image(_data_url(overlay)).classes("w-40 h-40 nf-try-overlay").props("fit=contain") \
                        .tooltip(f"Grad-CAM: where the model looked for '{result['classes'][0]['label']}'")
            for rank, entry in enumerate(result["classes"], start=1):
                share = max(0.0, min(1.0, entry["probability"]))
                with ui.row().classes("w-full items-center gap-2 no-wrap nf-try-class"):
                    ui.label(f"{rank}. {entry['label']}").classes("text-sm w-28 ellipsis nf-try-label")
                    with ui.element("div").classes("grow h-3 bg-grey-3 rounded-borders"):
                        ui.element("div").classes("h-3 bg-indigo-6 rounded-borders nf-try-bar") \
                            .style(f"width: {share * 100:.1f}%")
                    ui.label(f"{share * 100:.1f}%").classes("text-xs w-12 text-right nf-try-probability")


def _data_url(png: bytes) -> str:
    kind = "image/png" if png[:8] == b"\x89PNG\r\n\x1a\n" else "image/*"
    return f"data:{kind};base64,{base64.b64encode(png).decode('ascii')}"
