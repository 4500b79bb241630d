"""What a person sees of a run, in headless Chromium through the real server: a card queued at once,
a training's epoch and time left, a stop that says where it stopped in the same words and colours on
the card, the minimap, the Output tab, the Runs panel and the API, a server restart that forgets
nothing, a resumed training whose curves start at epoch one, and a cached node's stored output."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from nodeflow.ui.state import STATE_STYLE, state_fill
from tests.core.conftest import make_graph

from .conftest import Server, editor_tab, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAIN = '.vue-flow__node[data-id="train"]'
AFTER = '.vue-flow__node[data-id="after"]'


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def state_of(tab, card: str) -> str:
    return tab.locator(f"{card} .nf-badge").get_attribute("data-state")


@pytest.fixture
def training(tmp_path):
    graph = make_graph({"a": ("test.constant", {"value": 1}), "train": ("test.epochs", {"epochs": 40, "delay": 0.15}),
                        "after": ("test.describe", {})}, ["a.value->train.value", "train.value->after.value"],
                       name="training")
    data = graph.model_dump(mode="json")
    for x, node in zip((0, 320, 640), data["nodes"]):  # side by side, as a person lays them out
        node["position"] = {"x": x, "y": 80}
    path = tmp_path / "training.json"
    type(graph).from_data(data).save(path)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return workspace, path


def test_a_run_as_a_person_sees_it_through_stop_restart_and_resume(browser, training):
    workspace, graph_file = training
    server = Server(workspace, "--graph", str(graph_file))
    try:
        with editor_tab(browser, server, "train") as tab:
            # ▶ on the last node: the run is queued at once (nothing measured first); the card of the node
            # waiting behind the training says so while the training runs
            tab.locator(f"{AFTER} .nf-run").click()
            tab.wait_for_selector(f'{AFTER} .nf-badge[data-state="queued"]', timeout=10_000)
            assert tab.locator(".nf-run-confirm").count() == 0
            # a running training's card: which epoch of how many, and the time left
            tab.wait_for_function(f"""() => /running · epoch ([3-9]|[1-3][0-9])\\/40 · .* left/.test(
                document.querySelector('{TRAIN} .nf-state-words')?.innerText || '')""", timeout=60_000)
            tab.get_by_role("button", name="Stop").click()
            tab.wait_for_selector(f'{TRAIN} .nf-badge[data-state="stopped"]', timeout=15_000)
            words = tab.locator(f"{TRAIN} .nf-state-words").inner_text()
            epoch = int(re.fullmatch(r"stopped at epoch (\d+)/40 · resumes from its checkpoint", words).group(1))
            assert epoch >= 3

            # the same state, in the same words and colours, everywhere it is shown
            stopped = STATE_STYLE["stopped"]
            badge = tab.locator(f"{TRAIN} .nf-badge")
            assert badge.inner_text() == "stopped"
            expect(badge).to_have_css("background-color", rgb(stopped["background"]))
            fills = tab.eval_on_selector_all(".vue-flow__minimap-node", "els => els.map(e => e.getAttribute('fill'))")
            assert state_fill("stopped") in fills and state_fill("done") in fills  # train, and a
            assert server.api("GET", "/api/status").json()["nodes"]["train"]["words"] == words
            tab.locator(f"{TRAIN} .nf-title").click()
            tab.get_by_role("tab", name="Output").click()
            tab.wait_for_function(f"""() => (document.querySelector('.nf-run-label')?.innerText || '')
                .endsWith({words!r})""", timeout=10_000)
            tab.get_by_role("button", name="Runs").click()
            chip = tab.locator('.nf-run-status[data-state="stopped"]').first
            chip.wait_for(timeout=10_000)
            assert chip.inner_text() == "stopped"
            # the runs panel redraws its rows as runs change: read the colour from the row on the page now
            expect(chip).to_have_css("background-color", rgb(stopped["background"]))
            shot(tab, "run-core-stopped")
    finally:
        server.stop()

    # a restart forgets nothing: the stopped training, the done constant, the node never run
    server = Server(workspace, "--graph", str(graph_file))
    try:
        with editor_tab(browser, server, "train") as tab:
            assert (state_of(tab, TRAIN), state_of(tab, '.vue-flow__node[data-id="a"]'), state_of(tab, AFTER)) == \
                ("stopped", "done", "idle")
            assert tab.locator(f"{TRAIN} .nf-state-words").inner_text() == words
            # it resumes, and its curves hold the epochs from before the stop
            tab.locator(f"{TRAIN} .nf-run").click()
            tab.wait_for_selector(f'{TRAIN} .nf-badge[data-state="done"]', timeout=60_000)
            runs = server.api("GET", "/api/runs").json()
            resumed = server.api("GET", f"/api/runs/{runs[0]['id']}").json()
            assert [step for step, _ in resumed["curves"]["train"]["loss"]] == list(range(1, 41))
    finally:
        server.stop()

    # and once more: the trained node is done, its Output tab shows its stored numbers and curves
    server = Server(workspace, "--graph", str(graph_file))
    try:
        with editor_tab(browser, server, "train") as tab:
            assert state_of(tab, TRAIN) == "done"
            tab.locator(f"{TRAIN} .nf-title").click()
            tab.get_by_role("tab", name="Output").click()
            tab.wait_for_selector(".nf-metrics", timeout=10_000)
            assert "loss" in tab.locator(".nf-metrics").inner_text()
            assert tab.locator(".nf-chart").count() >= 1
            assert "No output yet" not in tab.locator(".nf-output").inner_text()
            assert tab.locator(".nf-run-label").inner_text().startswith("Run of ")
    finally:
        server.stop()
