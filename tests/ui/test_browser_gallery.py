"""A person clicks a cell of the error analysis's confusion matrix on the Output tab and sees that
cell's images with their Grad-CAM overlays, captioned with the true and predicted class; opening
the cell again shows the same overlays from the cache, drawing none. A cell fuller than a page is
paged. Evaluate's matrix says how to get galleries."""

from __future__ import annotations

import pytest

from tests.ui import gallery_server
from tests.ui.conftest import editor_tab, shot, wait_until_still

pytestmark = pytest.mark.browser

#: every cell of the heatmap: [predicted index, true index, count], with its centre in page pixels
CELLS = """() => {
    const el = document.querySelector('.nf-output .nf-confusion');
    const chart = el && getElement(el) && getElement(el).chart;
    if (!chart) return null;
    const option = chart.getOption();
    const box = el.getBoundingClientRect();
    return {classes: option.xAxis[0].data, cells: option.series[0].data.map(d => {
        const [x, y] = chart.convertToPixel({seriesIndex: 0}, [d[0], d[1]]);
        return {predicted: d[0], true: d[1], count: d[2], x: box.left + x, y: box.top + y};
    })};
}"""

IMAGES_LOADED = """() => {
    const images = [...document.querySelectorAll('.nf-gallery .nf-gallery-img')];
    return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # 50 pictures a class: 20 in the test split, 60 in the train split (some cell of which holds 15 or more)
    server = gallery_server.start(tmp_path_factory.mktemp("gallery-browser"), per_class=50)
    yield server
    server.stop()


@pytest.fixture
def tab(browser, server):
    with editor_tab(browser, server, "errors", height=950) as page:
        yield page


def open_output(tab, node_id: str) -> None:
    tab.locator(f'.vue-flow__node[data-id="{node_id}"] .nf-title').click()
    tab.get_by_role("tab", name="Output").click()
    tab.wait_for_selector(".nf-output .nf-confusion canvas")
    tab.wait_for_function(f"() => ({CELLS})() !== null")


def settled_cells(tab) -> dict:
    """The cells once the Output panel has stopped sliding in (a tab switch animates it)."""
    wait_until_still(tab, ".nf-output .nf-confusion")
    return tab.evaluate(CELLS)


def click_cell(tab, true: str, predicted: str) -> None:
    found = settled_cells(tab)
    classes = found["classes"]
    target = next(c for c in found["cells"] if classes[c["true"]] == true and classes[c["predicted"]] == predicted)
    tab.mouse.click(target["x"], target["y"])  # where a person clicks: the middle of the cell


def test_clicking_a_confusion_cell_shows_its_images_with_overlays_once_drawn(tab, server):
    open_output(tab, "errors")
    assert "Click a cell" in tab.locator(".nf-gallery-tip").inner_text()
    found = settled_cells(tab)
    classes = found["classes"]
    assert sum(c["count"] for c in found["cells"]) == 20  # every test image is counted once
    # the fullest misclassified cell if the model errs, else the fullest cell
    wrong = [c for c in found["cells"] if c["true"] != c["predicted"] and c["count"] > 0]
    chosen = max(wrong or found["cells"], key=lambda c: c["count"])
    true, predicted, count = classes[chosen["true"]], classes[chosen["predicted"]], chosen["count"]
    shown = min(count, 12)

    click_cell(tab, true, predicted)
    tab.wait_for_selector(".nf-gallery .nf-gallery-item", timeout=120_000)
    assert tab.locator(".nf-gallery .nf-gallery-item").count() == shown
    tab.wait_for_function(IMAGES_LOADED, timeout=30_000)
    assert tab.locator(".nf-gallery .nf-gallery-img").count() == shown
    title = tab.locator(".nf-gallery-title").inner_text()
    assert f"True {true}, predicted {predicted}: {count} " in title
    captions = tab.locator(".nf-gallery .nf-gallery-classes").all_inner_texts()
    assert captions == [f"true {true} · predicted {predicted}"] * shown
    numbers = tab.locator(".nf-gallery .nf-gallery-numbers").all_inner_texts()
    assert all(n.startswith("confidence ") and " · loss " in n for n in numbers)
    losses = [float(n.rsplit("loss ", 1)[1]) for n in numbers]
    assert losses == sorted(losses, reverse=True)  # worst first
    status = tab.locator(".nf-gallery-status").inner_text()
    assert f"{shown} overlay" in status and "drawn now" in status, status
    overlays = sorted((server.workspace / "overlays").glob("*.png"))
    assert len(overlays) == shown
    stamps = {p.name: p.stat().st_mtime_ns for p in overlays}
    shot(tab, "confusion-gallery")

    # close it and open the same cell again: the same overlays, from the cache, none drawn
    tab.locator(".nf-gallery-close").click()
    tab.wait_for_selector(".nf-gallery", state="hidden")
    click_cell(tab, true, predicted)
    tab.wait_for_function("() => (document.querySelector('.nf-gallery-status') || {}).innerText"
                          "?.includes('from the overlay cache')", timeout=30_000)
    assert tab.locator(".nf-gallery-status").inner_text().startswith(f"all {shown} overlay")
    tab.wait_for_function(IMAGES_LOADED, timeout=30_000)
    assert tab.locator(".nf-gallery .nf-gallery-item").count() == shown
    assert {p.name: p.stat().st_mtime_ns for p in (server.workspace / "overlays").glob("*.png")} == stamps


def test_evaluates_matrix_says_how_to_get_galleries(tab):
    open_output(tab, "eval")
    hint = tab.locator(".nf-gallery-hint").inner_text()
    assert "add an Error analysis node" in hint
    assert tab.locator(".nf-gallery-tip").count() == 0


def test_a_full_cell_is_paged(tab, server):
    # the train split: 60 images in four cells, so the fullest holds at least 15, more than a page
    assert server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "errors",
                                                          "params": {"split": "train"}}]}).status_code == 200
    assert server.api("POST", "/api/run", json={"target": "errors"}).status_code == 200
    open_output(tab, "errors")
    tab.wait_for_function(f"() => {{ const f = ({CELLS})(); return f && f.cells.reduce((a, c) => a + c.count, 0) "
                          "=== 60; }", timeout=120_000)
    found = settled_cells(tab)
    fullest = max(found["cells"], key=lambda c: c["count"])
    true, predicted, count = found["classes"][fullest["true"]], found["classes"][fullest["predicted"]], fullest["count"]
    assert count > 12
    click_cell(tab, true, predicted)
    tab.wait_for_selector(".nf-gallery .nf-gallery-pages", timeout=120_000)
    assert tab.locator(".nf-gallery .nf-gallery-item").count() == 12
    first_page = tab.locator(".nf-gallery .nf-gallery-file").all_inner_texts()
    assert first_page[0].startswith("#1 ") and first_page[-1].startswith("#12 ")
    tab.locator(".nf-gallery-pages").get_by_role("button", name="2", exact=True).click()
    tab.wait_for_function("() => (document.querySelector('.nf-gallery .nf-gallery-file') || {}).innerText"
                          "?.startsWith('#13 ')", timeout=120_000)
    assert tab.locator(".nf-gallery .nf-gallery-item").count() == min(12, count - 12)
    tab.wait_for_function(IMAGES_LOADED, timeout=30_000)
