"""A person selects a trained node, opens its Try it tab and drops an image on it: the tab says it is
loading the model, then shows the picture, its Grad-CAM overlay beside it and the classes ranked as
probability bars. A node that gives no model says which nodes can be tried."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from tests.ui.conftest import editor_tab
from tests.ui.predict_server import CLASSES, start

pytestmark = pytest.mark.browser

#: a DataTransfer holding one PNG file, as a person's drag from the desktop carries it
DRAGGED = """(b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], "red.png", {type: "image/png"}));
    return transfer;
}"""

LOADED = """() => {
    const images = [...document.querySelectorAll('.nf-try-result img')];
    return images.length === 2 && images.every((i) => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("try-browser"))
    yield server
    server.stop()


def picture() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (220, 40, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def open_try_it(tab, node_id: str) -> None:
    tab.locator(f'.vue-flow__node[data-id="{node_id}"] .nf-title').click()
    tab.get_by_role("tab", name="Try it").click()


def test_dropping_an_image_shows_ranked_classes_and_an_overlay(browser, server):
    with editor_tab(browser, server, "train") as tab:
        open_try_it(tab, "eval")
        assert "Select a Trainer or a Linear classifier" in tab.locator(".nf-try-title").inner_text()
        assert not tab.locator(".nf-try-upload").is_visible()
        open_try_it(tab, "train")
        tab.wait_for_selector(".nf-try-upload", state="visible")
        assert "Try the model of 'train'" in tab.locator(".nf-try-title").inner_text()
        header = tab.locator(".nf-try-upload .q-uploader__header")  # what to do, no byte count or percentage
        assert header.locator(".q-uploader__title").inner_text() == "Drop, paste or choose an image"
        assert not re.search(r"\d+(\.\d+)?\s?B\b|%", header.inner_text()), header.inner_text()
        dragged = tab.evaluate_handle(DRAGGED, picture())
        tab.dispatch_event(".nf-try-upload", "dragover", {"dataTransfer": dragged})
        tab.wait_for_selector(".nf-try-upload .q-uploader__dnd")
        tab.dispatch_event(".nf-try-upload .q-uploader__dnd", "drop", {"dataTransfer": dragged})
        tab.wait_for_function("() => document.querySelector('.nf-try-status').innerText.includes('Loading the model')")
        tab.wait_for_selector(".nf-try-result .nf-try-class", timeout=120_000)
        tab.wait_for_function(LOADED)
        status = tab.locator(".nf-try-status").inner_text()
        assert status.startswith("red.png: ") and "model loaded" in status
        labels = [text.split(". ", 1)[1] for text in tab.locator(".nf-try-label").all_inner_texts()]
        shares = [float(text.rstrip("%")) for text in tab.locator(".nf-try-probability").all_inner_texts()]
        assert sorted(labels) == sorted(CLASSES) and shares == sorted(shares, reverse=True)
        assert abs(sum(shares) - 100) < 0.3 and status.split(": ", 1)[1].startswith(labels[0])
        widths = tab.eval_on_selector_all(".nf-try-bar", "bars => bars.map(b => b.getBoundingClientRect().width)")
        assert widths[0] >= widths[1] > -1
        overlay = tab.locator(".nf-try-overlay img")
        assert overlay.evaluate("i => i.naturalWidth") >= 32
        # a second image: the model is loaded already
        tab.dispatch_event(".nf-try-upload", "dragover", {"dataTransfer": dragged})
        tab.wait_for_selector(".nf-try-upload .q-uploader__dnd")
        tab.dispatch_event(".nf-try-upload .q-uploader__dnd", "drop", {"dataTransfer": dragged})
        tab.wait_for_function("() => { const s = document.querySelector('.nf-try-status').innerText;"
                              " return s.startsWith('red.png: ') && !s.includes('model loaded'); }")
        tab.wait_for_function(LOADED)
        # a third, chosen with the header's button (on a phone the picker offers the camera)
        with tab.expect_file_chooser() as chooser:
            header.locator('[aria-label="Choose an image"]').click()
        chooser.value.set_files(files=[{"name": "chosen.png", "mimeType": "image/png",
                                        "buffer": base64.b64decode(picture())}])
        tab.wait_for_function("() => document.querySelector('.nf-try-status').innerText.startsWith('chosen.png: ')")
