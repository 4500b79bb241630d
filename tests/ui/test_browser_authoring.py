"""Authoring as in a tool used every day, in headless Chromium with the test node pack: copy and
paste (keys and the system clipboard, into another graph too), duplicate, the right-click menus,
disabling a node, groups (make, rename, collapse, expand, ungroup, save to the palette, insert),
a dropped node that lands inside the view, and a header that keeps one row while a run goes.

Each test drives the page as a person does (keys, right-click, drag) and asserts what is on screen;
the server's document is read only to confirm what the screen says."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from playwright.sync_api import expect

from tests.waiting import wait_for

from .conftest import Server, editor_tab, shot, wait_until_still
from .server import demo_graph

pytestmark = pytest.mark.browser
SELECTED = re.compile(r"\bselected\b")


@pytest.fixture
def tab(browser, pack_server):
    """A tab on the demo graph that may use the system clipboard."""
    pack_server.api("POST", "/api/stop")
    pack_server.api("PUT", "/api/graph", json=demo_graph().model_dump(mode="json"))
    with editor_tab(browser, pack_server, "desc", clipboard=True) as page:
        yield page


def card(tab, node: str):
    return tab.locator(f'.vue-flow__node[data-id="{node}"]')


def ids_on_screen(tab) -> set[str]:
    return set(tab.eval_on_selector_all(".vue-flow__node", "els => els.map(e => e.dataset.id)"))


def graph(server) -> dict:
    return server.api("GET", "/api/graph").json()


def positions(server) -> dict[str, dict]:
    return {n["id"]: n["position"] for n in graph(server)["nodes"]}


def settled(tab, node: str) -> None:
    """Wait until a card stays where it is on screen between two polls (a fit of the view is done)."""
    tab.wait_for_function("""(id) => {
        const r = document.querySelector(`.vue-flow__node[data-id="${id}"]`).getBoundingClientRect();
        const now = [r.x, r.y, r.width].join();
        const same = window.__nfLastBox === now;
        window.__nfLastBox = now;
        return same;
    }""", arg=node, polling=150)


def box_select(tab, nodes: list[str]) -> None:
    """Shift-drag a box around the cards ``nodes``, as a person selects several."""
    boxes = [card(tab, n).bounding_box() for n in nodes]
    x0, y0 = min(b["x"] for b in boxes) - 15, min(b["y"] for b in boxes) - 15
    x1, y1 = max(b["x"] + b["width"] for b in boxes) + 15, max(b["y"] + b["height"] for b in boxes) + 15
    tab.keyboard.down("Shift")
    tab.mouse.move(x0, y0)
    tab.mouse.down()
    tab.mouse.move(x1, y1, steps=8)
    tab.mouse.up()
    tab.keyboard.up("Shift")
    for node in nodes:
        expect(card(tab, node)).to_have_class(SELECTED)


def right_click(tab, node: str) -> None:
    box = card(tab, node).locator(".nf-title").bounding_box()
    tab.mouse.click(box["x"] + 10, box["y"] + box["height"] / 2, button="right")
    tab.locator(".nf-menu").wait_for()


def choose(tab, action: str) -> None:
    tab.locator(f'.nf-menu-item[data-action="{action}"]').click()
    tab.locator(".nf-menu").wait_for(state="detached")


def copied_text(tab) -> str:
    """The system clipboard's text once the page's write lands: the notice of a copy may come first."""
    assert wait_for(lambda: tab.evaluate("navigator.clipboard.readText()"), timeout=10), "nothing was copied"
    return tab.evaluate("navigator.clipboard.readText()")


def empty_spot(tab) -> dict:
    """A point of the canvas with no card under it (below the demo graph's cards)."""
    pane = tab.locator(".vue-flow__pane").bounding_box()
    return {"x": pane["x"] + pane["width"] * 0.3, "y": pane["y"] + pane["height"] * 0.55}


def inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return all(outer[a] - slack <= inner[a] and inner[a] + inner[size] <= outer[a] + outer[size] + slack
               for a, size in (("x", "width"), ("y", "height")))


# -- copy, paste, duplicate ----------------------------------------------------------------------------
def test_copy_and_paste_with_keys_keep_the_wires_between_them_as_one_undo_step(tab, pack_server):
    box_select(tab, ["c1", "c2", "add"])
    tab.keyboard.press("Control+c")
    expect(tab.locator(".q-notification", has_text="Copied 3 nodes")).to_be_visible()
    copied = json.loads(copied_text(tab))  # the system clipboard holds a graph
    assert copied["format"] == "nodeflow.graph" and [n["id"] for n in copied["nodes"]] == ["c1", "c2", "add"]
    assert len(copied["edges"]) == 2  # c1 -> add, c2 -> add; not add -> slow, whose end stays behind

    spot = empty_spot(tab)
    tab.mouse.move(spot["x"], spot["y"])
    tab.keyboard.press("Control+v")
    for node in ("c1_2", "c2_2", "add_2"):
        expect(card(tab, node)).to_be_visible()
    expect(tab.locator('.vue-flow__edge[data-id="add_2.a"]')).to_be_attached()
    expect(tab.locator('.vue-flow__edge[data-id="add_2.b"]')).to_be_attached()
    assert len(ids_on_screen(tab)) == 9
    pasted = card(tab, "c1_2").bounding_box()
    assert abs(pasted["x"] - spot["x"]) < 30 and abs(pasted["y"] - spot["y"]) < 30  # where the pointer was
    canvas = tab.locator(".nf-canvas").bounding_box()
    assert all(inside(card(tab, n).bounding_box(), canvas) for n in ("c1_2", "c2_2", "add_2"))
    edges = {(e["source"], e["target"], e["target_port"]) for e in graph(pack_server)["edges"]}
    assert {("c1_2", "add_2", "a"), ("c2_2", "add_2", "b")} <= edges
    shot(tab, "authoring-pasted")

    tab.locator(".vue-flow__pane").click(position={"x": 20, "y": 20})
    tab.keyboard.press("Control+z")  # one step takes the whole paste back
    expect(card(tab, "add_2")).to_have_count(0)
    assert ids_on_screen(tab) == {"c1", "c2", "add", "slow", "desc", "add2"}


def test_duplicate_with_ctrl_d_lands_beside_the_original_and_is_selected(tab, pack_server):
    card(tab, "slow").locator(".nf-title").click()
    tab.keyboard.press("Control+d")
    expect(card(tab, "slow_2")).to_be_visible()
    expect(card(tab, "slow_2")).to_have_class(SELECTED)
    original, copy = card(tab, "slow").bounding_box(), card(tab, "slow_2").bounding_box()
    assert copy["x"] >= original["x"] + original["width"] or copy["y"] >= original["y"] + original["height"]
    summary = card(tab, "slow").locator(".nf-summary").inner_text()
    assert card(tab, "slow_2").locator(".nf-summary").inner_text() == summary
    expect(tab.locator(".nf-inspector-title")).to_have_text("Slow")  # the copy's form is open


def test_paste_into_another_graph_in_another_tab(browser, pack_server, tab, shared_pack_server):
    other = shared_pack_server  # another editor (the process's shared one), on another graph
    other.api("POST", "/api/stop")
    assert other.api("PUT", "/api/graph", json={"format": "nodeflow.graph", "version": 2, "name": "other", "nodes": [
        {"id": "x", "type": "test.constant", "position": {"x": 0, "y": 0}}]}).status_code == 200
    box_select(tab, ["slow", "desc"])
    tab.keyboard.press("Control+c")
    expect(tab.locator(".q-notification", has_text="Copied 2 nodes")).to_be_visible()
    assert '"slow"' in copied_text(tab)
    second = tab.context.new_page()  # the same browser, another editor and another graph
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=other.url)
    second.goto(other.url + "/")
    second.wait_for_selector('.vue-flow__node[data-id="x"]')
    spot = empty_spot(second)
    second.mouse.move(spot["x"], spot["y"])
    second.keyboard.press("Control+v")
    expect(card(second, "slow")).to_be_visible()
    expect(card(second, "desc")).to_be_visible()
    expect(second.locator('.vue-flow__edge[data-id="desc.value"]')).to_be_attached()
    nodes = {n["id"]: n for n in other.api("GET", "/api/graph").json()["nodes"]}
    assert set(nodes) == {"x", "slow", "desc"} and nodes["slow"]["params"] == {"steps": 20, "delay": 0.05}
    second.close()


def test_pasting_plain_text_says_there_is_nothing_to_paste(tab, pack_server):
    tab.evaluate("navigator.clipboard.writeText('a sentence from somewhere else')")
    tab.locator(".vue-flow__pane").click(position={"x": 20, "y": 20})
    tab.keyboard.press("Control+v")
    expect(tab.locator(".q-notification", has_text="no nodeflow nodes")).to_be_visible()
    assert len(graph(pack_server)["nodes"]) == 6


# -- the right-click menus, disabling ------------------------------------------------------------------
def test_right_click_a_node_to_disable_it_then_run_all_leaves_it_and_what_needs_it_out(tab, pack_server):
    right_click(tab, "add2")  # the demo's unwired node would stop "Run all": delete it first
    choose(tab, "delete")
    expect(card(tab, "add2")).to_have_count(0)
    right_click(tab, "slow")
    items = tab.locator(".nf-menu-item").all_inner_texts()
    assert [i.split("\n")[0] for i in items] == ["Run to here", "Duplicate", "Copy", "Paste", "Disable", "Group",
                                                 "Delete"]
    choose(tab, "disable")
    expect(card(tab, "slow").locator(".nf-badge")).to_have_text("disabled")
    expect(card(tab, "slow").locator(".nf-node")).to_have_class(re.compile("nf-disabled"))
    expect(card(tab, "desc").locator(".nf-problem")).to_contain_text("needs slow.value, which is disabled")
    assert next(n for n in graph(pack_server)["nodes"] if n["id"] == "slow")["disabled"] is True

    tab.get_by_role("button", name="Run all").click()
    expect(card(tab, "add").locator(".nf-badge")).to_have_attribute("data-state", "done", timeout=15000)
    expect(card(tab, "c2").locator(".nf-badge")).to_have_attribute("data-state", "done")
    assert card(tab, "slow").locator(".nf-badge").get_attribute("data-state") == "disabled"
    assert card(tab, "desc").locator(".nf-badge").get_attribute("data-state") == "invalid"
    shot(tab, "authoring-disabled")

    right_click(tab, "slow")
    choose(tab, "enable")
    expect(card(tab, "slow").locator(".nf-badge")).to_have_attribute("data-state", "idle")
    expect(card(tab, "desc").locator(".nf-problem")).to_have_count(0)


def test_right_click_run_to_here_and_duplicate(tab, pack_server):
    pack_server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "c1", "params": {"value": 17}}]})
    right_click(tab, "add")  # a value no earlier test ran with: it runs now
    choose(tab, "run")
    expect(card(tab, "add").locator(".nf-badge")).to_have_attribute("data-state", "done", timeout=15000)
    assert card(tab, "slow").locator(".nf-badge").get_attribute("data-state") == "idle"  # only what it needs ran

    right_click(tab, "desc")
    choose(tab, "duplicate")
    expect(card(tab, "desc_2")).to_be_visible()
    assert next(n for n in graph(pack_server)["nodes"] if n["id"] == "desc_2")["type"] == "test.describe"


def test_right_click_the_canvas_offers_paste_and_the_selection_offers_group(tab, pack_server):
    tab.locator(".vue-flow__pane").click(position={"x": 30, "y": 30}, button="right")
    assert [i.split("\n")[0] for i in tab.locator(".nf-menu-item").all_inner_texts()] == ["Paste", "Fit view"]
    tab.keyboard.press("Escape")
    expect(tab.locator(".nf-menu")).to_have_count(0)

    box_select(tab, ["c1", "c2"])
    right_click(tab, "c2")
    expect(tab.locator(".nf-menu-head")).to_have_text("2 selected nodes")
    choose(tab, "group")
    expect(tab.locator(".nf-frame .nf-group-title")).to_have_text("Group")


# -- groups --------------------------------------------------------------------------------------------
def test_group_rename_collapse_expand_and_ungroup(tab, pack_server):
    assert pack_server.api("POST", "/api/run", json={"target": "add"}).status_code == 200
    expect(card(tab, "add").locator(".nf-badge")).to_have_attribute("data-state", re.compile("done|cached"),
                                                                    timeout=15000)
    box_select(tab, ["c1", "c2", "add"])
    tab.keyboard.press("Control+g")
    frame = tab.locator('.nf-frame[data-group="group"]')
    expect(frame).to_be_visible()
    assert all(inside(card(tab, n).bounding_box(), frame.bounding_box()) for n in ("c1", "c2", "add"))

    frame.locator(".nf-group-title").dblclick()
    frame.locator(".nf-group-rename").fill("Sum of two")
    frame.locator(".nf-group-rename").press("Enter")
    expect(frame.locator(".nf-group-title")).to_have_text("Sum of two")

    frame.locator(".nf-collapse").click()
    group = card(tab, "group/group")
    expect(group).to_be_visible()
    for node in ("c1", "c2", "add"):
        expect(card(tab, node)).to_be_hidden()
    expect(group.locator(".nf-group-title")).to_have_text("Sum of two")
    assert group.locator(".nf-out").all_inner_texts() == ["value"]  # the one port that leaves the group
    assert group.locator(".nf-out").get_attribute("data-handle") == "add.value"
    expect(group.locator(".nf-sub")).to_contain_text("group of 3")
    # the wire to slow now starts at the card, and grouping changed no cache key: still cached
    expect(tab.locator('.vue-flow__edge[data-id="slow.value"]')).to_be_attached()
    expect(group.locator(".nf-badge")).to_have_text("cached")
    shot(tab, "authoring-collapsed")
    assert pack_server.api("GET", "/api/status").json()["nodes"]["add"]["state"] == "cached"
    assert graph(pack_server)["groups"] == [{"id": "group", "title": "Sum of two", "members": ["c1", "c2", "add"],
                                            "collapsed": True, "position": graph(pack_server)["groups"][0]["position"]}]

    group.locator(".nf-expand").click()
    expect(card(tab, "group/group")).to_have_count(0)
    for node in ("c1", "c2", "add"):
        expect(card(tab, node)).to_be_visible()

    head = tab.locator('.nf-frame[data-group="group"] .nf-frame-head').bounding_box()
    tab.mouse.click(head["x"] + head["width"] - 60, head["y"] + head["height"] / 2, button="right")
    choose(tab, "ungroup")
    expect(tab.locator(".nf-frame")).to_have_count(0)
    assert graph(pack_server)["groups"] == [] and len(graph(pack_server)["nodes"]) == 6


def test_dragging_a_groups_title_moves_its_cards(tab, pack_server):
    box_select(tab, ["c1", "c2"])
    tab.keyboard.press("Control+g")
    head = tab.locator('.nf-frame[data-group="group"] .nf-frame-head')
    expect(head).to_be_visible()
    before = positions(pack_server)
    box = head.bounding_box()
    tab.mouse.move(box["x"] + 40, box["y"] + box["height"] / 2)
    tab.mouse.down()
    tab.mouse.move(box["x"] + 40, box["y"] + box["height"] / 2 + 120, steps=6)
    tab.mouse.up()  # the move goes to the server as one edit when the pointer is let go
    assert wait_for(lambda: positions(pack_server)["c1"] != before["c1"], 10)
    after = positions(pack_server)
    assert after["c1"]["y"] > before["c1"]["y"] + 50 and after["c2"]["y"] > before["c2"]["y"] + 50
    assert after["add"] == before["add"]  # not in the group: it stays


def test_a_group_saved_to_the_palette_is_inserted_by_dragging_it_in(tab, pack_server):
    box_select(tab, ["c1", "c2", "add"])
    tab.keyboard.press("Control+g")
    frame = tab.locator('.nf-frame[data-group="group"]')
    frame.locator(".nf-group-title").dblclick()
    frame.locator(".nf-group-rename").fill("Two numbers")
    frame.locator(".nf-group-rename").press("Enter")
    expect(frame.locator(".nf-group-title")).to_have_text("Two numbers")
    head = frame.locator(".nf-frame-head").bounding_box()
    tab.mouse.click(head["x"] + 20, head["y"] + head["height"] / 2, button="right")
    choose(tab, "save")
    item = tab.locator('.nf-library-item[data-group="Two_numbers"]')
    expect(item).to_be_visible()
    expect(item).to_contain_text("Two numbers")

    pane = tab.locator(".vue-flow__pane")
    size = pane.bounding_box()
    item.drag_to(pane, target_position={"x": size["width"] * 0.35, "y": size["height"] * 0.7})
    for node in ("c1_2", "c2_2", "add_2"):
        expect(card(tab, node)).to_be_visible()
    expect(tab.locator(".nf-frame .nf-group-title")).to_have_text(["Two numbers", "Two numbers"])
    assert [g["members"] for g in graph(pack_server)["groups"]] == [["c1", "c2", "add"], ["c1_2", "c2_2", "add_2"]]


# -- continuity ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_open_lists_graphs_newest_first_and_the_editor_reopens_unsaved_edits(browser, tmp_path):
    workspace = tmp_path / "workspace"
    (workspace / "projects").mkdir(parents=True)
    mine, older = workspace / "projects" / "mine.json", workspace / "older.json"
    demo_graph().save(older)
    demo_graph().save(mine)
    os.utime(older, (time.time() - 3600, time.time() - 3600))
    (workspace / "errors" / "errors").mkdir(parents=True)  # a node's output: JSON, but no graph
    (workspace / "errors" / "errors" / "errors.json").write_text('{"top_errors": [], "cells": []}')
    for stamp in ("20260101-100000-000003", "20260101-110000-000007"):
        demo_graph().save(workspace / "autosave" / "earlier" / f"{stamp}.json")

    first = Server(workspace, "--reopen")  # nothing noted yet: it opens its default graph
    try:
        with editor_tab(browser, first, "desc") as tab:
            tab.locator('[aria-label="Open"]').click()
            listed = tab.locator(".nf-open-graph")
            expect(listed).to_have_count(2)
            assert [t.split("\n")[0] for t in listed.all_inner_texts()] == ["projects/mine.json", "older.json"]
            assert "errors" not in tab.locator(".nf-open").inner_text()
            recover = tab.locator(".nf-recover")
            expect(recover).to_contain_text("Recover (2 autosaved versions)")
            recover.locator(".q-expansion-item__container > .q-item").click()
            expect(tab.locator(".nf-open-autosave")).to_have_count(2)
            listed.first.click()
            expect(tab.locator(".nf-file")).to_have_text("mine.json")
            expect(tab.locator(".nf-open")).to_have_count(0)
            settled(tab, "c1")  # opening a graph fits the view to it
            handle = card(tab, "c1").locator(".nf-title").bounding_box()
            tab.mouse.move(handle["x"] + 10, handle["y"] + 5)
            tab.mouse.down()
            tab.mouse.move(handle["x"] + 10, handle["y"] + 205, steps=6)
            tab.mouse.up()
            assert wait_for(lambda: positions(first)["c1"]["y"] > 150, 10)
            expect(tab.locator(".nf-file")).to_have_text("mine.json •")
            moved = positions(first)["c1"]
    finally:
        first.stop()  # well before its autosave is due: stopping writes it
    assert json.loads(mine.read_text())["nodes"][0]["position"] == {"x": 0.0, "y": 0.0}  # the file is untouched

    second = Server(workspace, "--reopen")
    try:
        with editor_tab(browser, second, "desc") as tab:
            expect(tab.locator(".nf-notice")).to_contain_text("Reopened mine.json with unsaved edits from ")
            expect(tab.locator(".nf-file")).to_have_text("mine.json •")
            assert positions(second)["c1"] == moved
    finally:
        second.stop()


# -- layout --------------------------------------------------------------------------------------------
def test_a_node_dropped_at_the_edge_lands_wholly_inside_the_view(tab, pack_server):
    pane = tab.locator(".vue-flow__pane")
    size = pane.bounding_box()
    canvas = tab.locator(".nf-canvas").bounding_box()
    minimap = tab.locator(".vue-flow__minimap").bounding_box()
    for node, where in (("count", {"x": size["width"] - 5, "y": size["height"] * 0.3}),
                        ("count_2", {"x": size["width"] * 0.6, "y": size["height"] - 5})):
        tab.locator('.nf-palette-item[data-type="test.count"]').drag_to(pane, target_position=where)
        expect(card(tab, node)).to_be_visible()
        box = card(tab, node).bounding_box()
        assert inside(box, canvas), (node, box, canvas)
        assert box["y"] + box["height"] <= minimap["y"] or box["x"] + box["width"] <= minimap["x"]


def test_the_header_keeps_one_row_at_1280_px_while_a_run_goes(browser, pack_server):
    long_name = demo_graph().model_copy(update={"name": "Cats vs dogs: feature extraction, then fine-tuning"})
    pack_server.api("POST", "/api/stop")
    pack_server.api("PUT", "/api/graph", json=long_name.model_dump(mode="json"))
    pack_server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "slow",
                                                        "params": {"steps": 200, "delay": 0.05}}]})
    with editor_tab(browser, pack_server, "desc", width=1280) as page:
        header = page.locator(".nf-header")
        idle = header.bounding_box()
        canvas_top = page.locator(".nf-canvas").bounding_box()["y"]
        assert idle["height"] < 50
        assert pack_server.api("POST", "/api/run", json={"target": "desc"}).status_code == 200
        expect(page.locator(".nf-run-state")).to_contain_text("running slow", timeout=15000)
        running = header.bounding_box()
        assert running["height"] == idle["height"]
        assert page.locator(".nf-canvas").bounding_box()["y"] == canvas_top
        buttons = page.locator(".nf-header .q-btn").evaluate_all("els => els.map(e => e.getBoundingClientRect().top)")
        assert max(buttons) - min(buttons) < 2  # every button on the one row
        assert page.locator(".nf-file").get_attribute("title").startswith("Cats vs dogs: feature extraction")
        page.get_by_role("button", name="Stop").click()
    pack_server.api("POST", "/api/stop")


def test_the_runs_table_shows_every_column_at_1440_px(browser, pack_server):
    # the node ids of a real graph (train_finetuned, ...) and several changed params make long cells
    long = {"c1": "first_constant_of_the_sum", "c2": "second_constant_of_the_sum", "add": "the_sum_of_both_numbers",
            "slow": "a_slow_step_after_the_sum", "desc": "describe_the_final_number"}
    doc = json.loads(json.dumps(demo_graph().model_dump(mode="json"))
                     .replace('"c1"', '"%s"' % long["c1"]).replace('"c2"', '"%s"' % long["c2"])
                     .replace('"add"', '"%s"' % long["add"]).replace('"slow"', '"%s"' % long["slow"])
                     .replace('"desc"', '"%s"' % long["desc"]))
    pack_server.api("POST", "/api/stop")
    assert pack_server.api("PUT", "/api/graph", json=doc).status_code == 200
    for value in (3, 4):  # two runs; the second changed several params, a long "What changed"
        pack_server.api("POST", "/api/edit", json={"ops": [
            {"op": "set_params", "id": long["c1"], "params": {"value": value * 1000.123456}},
            {"op": "set_params", "id": long["c2"], "params": {"value": value * 2000.654321}},
            {"op": "set_params", "id": long["add"], "params": {"offset": value * 0.000123}},
            {"op": "set_params", "id": long["slow"], "params": {"steps": value, "delay": 0.0}}]})
        assert pack_server.api("POST", "/api/run", json={"target": long["desc"]}).status_code == 200
        assert wait_for(lambda: not pack_server.api("GET", "/api/status").json()["running"], 30)
    with editor_tab(browser, pack_server, long["desc"], width=1440) as page:
        page.get_by_role("button", name="Runs").click()
        table = page.locator(".nf-runs-table")
        expect(table.locator("tbody tr").first).to_be_visible()
        wait_until_still(page, ".nf-runs-panel")  # the dialog grows as it opens: measure it open
        panel = page.locator(".nf-runs-panel").bounding_box()
        for name in ("Run", "When", "Target", "What changed", "Key metrics", "Duration", "From", "Status"):
            header = table.locator("th", has_text=name).first.bounding_box()
            assert panel["x"] <= header["x"] and header["x"] + header["width"] <= panel["x"] + panel["width"], name
        middle = table.locator(".q-table__middle")
        assert middle.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
        assert f"{long['c1']}.value=" in table.locator("tbody tr").first.inner_text()
        shot(page, "authoring-runs-1440")
