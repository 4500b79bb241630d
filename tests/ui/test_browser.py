"""The editor in headless Chromium: drag, wire, refuse, delete, run, reload.

Uses the test node pack (fast); the cats-vs-dogs template is driven in test_browser_template.py.
"""

from __future__ import annotations

import pytest

from tests.waiting import wait_for

from .conftest import shot

pytestmark = pytest.mark.browser


def handle(tab, node: str, port: str, kind: str):
    return tab.locator(f'.vue-flow__node[data-id="{node}"] .vue-flow__handle.{kind}[data-handleid="{port}"]')


def drag_wire(tab, src, dst, hold_ms: int = 0) -> None:
    a, b = src.bounding_box(), dst.bounding_box()
    tab.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    tab.mouse.down()
    tab.mouse.move(b["x"] + b["width"] / 2 - 20, b["y"] + b["height"] / 2, steps=8)
    tab.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=4)
    if hold_ms:
        tab.wait_for_timeout(hold_ms)
    tab.mouse.up()


def wait_state(tab, node: str, state: str, timeout: float = 15000) -> None:
    tab.wait_for_selector(f'.vue-flow__node[data-id="{node}"] .nf-badge[data-state="{state}"]', timeout=timeout)


def test_canvas_draws_nodes_typed_handles_and_badges(page, pack_server):
    assert page.locator(".vue-flow__node").count() == 6
    assert page.locator(".vue-flow__edge").count() == 4
    colour = handle(page, "c1", "value", "source").evaluate("el => getComputedStyle(el).backgroundColor")
    assert colour == "rgb(66, 165, 245)"  # the Number type's colour
    assert page.locator('.vue-flow__node[data-id="slow"] .nf-summary').inner_text().startswith("steps=20")
    assert page.locator('.vue-flow__node[data-id="c1"] .nf-badge').inner_text() in ("not run", "cached")
    shot(page, "editor-test-pack")


def test_wire_two_compatible_ports(page, pack_server):
    src, dst = handle(page, "c2", "value", "source"), handle(page, "add2", "a", "target")
    a = src.bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(a["x"] + 60, a["y"] + 30, steps=4)
    assert "67, 160, 71" in dst.evaluate("el => getComputedStyle(el).boxShadow")  # compatible inputs light up
    page.mouse.up()
    drag_wire(page, src, dst)
    page.wait_for_selector('.vue-flow__edge[data-id="add2.a"]', state="attached")
    wire = {"source": "c2", "source_port": "value", "target": "add2", "target_port": "a"}
    assert wait_for(lambda: wire in pack_server.api("GET", "/api/graph").json()["edges"], timeout=10)


def test_incompatible_wire_is_refused_with_a_cue(page, pack_server):
    # Describe gives Text; Add's input takes a Number
    page.mouse.move(0, 0)
    src, dst = handle(page, "desc", "text", "source"), handle(page, "add2", "b", "target")
    a, b = src.bounding_box(), dst.bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=10)
    # while dragging, the incompatible input fades and a compatible output lights up
    assert float(dst.evaluate("el => getComputedStyle(el).opacity")) < 0.5
    assert float(handle(page, "slow", "value", "target").evaluate("el => getComputedStyle(el).opacity")) < 0.5
    page.mouse.up()
    page.wait_for_selector(".nf-cue")
    assert "refused" in page.locator(".nf-cue").inner_text()  # shown once refused: nothing more is coming
    assert page.locator('.vue-flow__edge[data-id="add2.b"]').count() == 0
    edges = pack_server.api("GET", "/api/graph").json()["edges"]
    assert not any(e["target"] == "add2" for e in edges)


def test_drag_a_node_from_the_palette(page, pack_server):
    before = len(pack_server.api("GET", "/api/graph").json()["nodes"])
    item = page.locator('.nf-palette-item[data-type="test.count"]')
    pane = page.locator(".vue-flow__pane")
    box = pane.bounding_box()
    item.drag_to(pane, target_position={"x": box["width"] * 0.5, "y": box["height"] * 0.8})
    page.wait_for_selector('.vue-flow__node[data-id="count"]')
    nodes = pack_server.api("GET", "/api/graph").json()["nodes"]
    assert len(nodes) == before + 1 and nodes[-1]["type"] == "test.count"
    page.wait_for_selector("text=N [0 … 1000]")  # the new node is selected: its form shows


def test_drag_a_node_moves_it_on_the_server(page, pack_server):
    node = page.locator('.vue-flow__node[data-id="add2"] .nf-title')
    box = node.bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + 110, box["y"] + 65, steps=6)
    page.mouse.up()

    def moved() -> bool:
        pos = next(n for n in pack_server.api("GET", "/api/graph").json()["nodes"] if n["id"] == "add2")["position"]
        return pos["x"] > 650 and pos["y"] > 330

    assert wait_for(moved, timeout=10)


def test_delete_key_removes_the_selected_node_and_undo_restores_it(page, pack_server):
    page.locator('.vue-flow__node[data-id="desc"] .nf-title').click()
    page.keyboard.press("Delete")
    page.wait_for_selector('.vue-flow__node[data-id="desc"]', state="detached")
    assert wait_for(lambda: not any(n["id"] == "desc" for n in pack_server.api("GET", "/api/graph").json()["nodes"]),
                    timeout=10)
    page.locator(".vue-flow__pane").click(position={"x": 20, "y": 20})
    page.keyboard.press("Control+z")
    page.wait_for_selector('.vue-flow__node[data-id="desc"]')
    # attached, not visible: a level edge has a zero-height box, which Playwright calls hidden
    page.wait_for_selector('.vue-flow__edge[data-id="desc.value"]', state="attached")


def test_run_selected_shows_running_then_done_and_reload_keeps_the_graph(page, pack_server, browser):
    page.locator('.vue-flow__node[data-id="slow"] .nf-run').click()
    wait_state(page, "slow", "running")
    wait_state(page, "slow", "done")
    assert page.locator('.vue-flow__node[data-id="add"] .nf-badge').get_attribute("data-state") == "done"
    assert page.locator('.vue-flow__node[data-id="desc"] .nf-badge').get_attribute("data-state") == "idle"
    # run the node after it: slow and its ancestors now come from the cache
    page.locator('.vue-flow__node[data-id="desc"] .nf-run').click()
    wait_state(page, "desc", "done")
    assert page.locator('.vue-flow__node[data-id="slow"] .nf-badge').get_attribute("data-state") == "cached"
    # a second tab sees the same graph and the same states
    other = browser.new_page(viewport={"width": 1200, "height": 800})
    other.goto(pack_server.url + "/")
    wait_state(other, "desc", "done")
    wait_state(other, "slow", "cached")
    other.close()
    # change a param: the node and what follows it go stale, upstream stays cached
    pack_server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "slow", "params": {"steps": 21}}]})
    wait_state(page, "slow", "stale")
    wait_state(page, "desc", "stale")
    assert page.locator('.vue-flow__node[data-id="add"] .nf-badge').get_attribute("data-state") == "cached"
    page.reload()
    page.wait_for_selector('.vue-flow__node[data-id="desc"]')
    assert page.locator(".vue-flow__node").count() == 6
    assert page.locator('.vue-flow__node[data-id="slow"] .nf-summary').inner_text().startswith("steps=21")
