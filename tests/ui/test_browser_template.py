"""The cats-vs-dogs template in headless Chromium with the real catalogue, shrunk to seconds:
32-pixel generated images, VGG16 without downloaded weights, one epoch per trainer."""

from __future__ import annotations

import time

import pytest

from .conftest import ARTIFACTS, Server, shot, tiny_template, wait_for_fit

pytestmark = pytest.mark.browser

TEMPLATE_IDS = {"input", "vgg16", "flatten", "dense", "classifier", "dataset", "formatter", "train", "finetune",
                "train_finetuned", "evaluate"}


@pytest.fixture(scope="module")
def template_server(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("template") / "workspace"
    workspace.mkdir()
    server = Server(workspace, "--builtin", "--graph", tiny_template(
        workspace, dense={"units": 8}, train={"epochs": 2, "batch_size": 4},
        train_finetuned={"epochs": 2, "batch_size": 4}))
    yield server
    server.stop()


def state(tab, node: str) -> str:
    return tab.locator(f'.vue-flow__node[data-id="{node}"] .nf-badge').get_attribute("data-state")


def watch_states(tab, node: str) -> None:
    """Record every badge state a node shows, however briefly."""
    tab.evaluate("""(node) => {
        window.__states = window.__states || {};
        const seen = window.__states[node] = [];
        const badge = () => document.querySelector(`.vue-flow__node[data-id="${node}"] .nf-badge`);
        seen.push(badge().dataset.state);
        new MutationObserver(() => { const s = badge().dataset.state; if (seen.at(-1) !== s) seen.push(s); })
            .observe(badge(), {attributes: true, childList: true, characterData: true, subtree: true});
    }""", node)


def seen(tab, node: str) -> list[str]:
    return tab.evaluate("(node) => window.__states[node]", node)


@pytest.mark.slow
def test_template_fine_tune_layers_and_run(browser, template_server):
    tab = browser.new_page(viewport={"width": 1600, "height": 950})
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(template_server.url + "/")
    tab.wait_for_selector('.vue-flow__node[data-id="evaluate"]')
    ids = set(tab.eval_on_selector_all(".vue-flow__node", "els => els.map(e => e.dataset.id)"))
    assert ids == TEMPLATE_IDS
    assert tab.locator(".vue-flow__edge").count() == 12
    wait_for_fit(tab)
    shot(tab, "editor-template")
    tab.locator(".vue-flow__controls-fitview").click()  # the first view is readable, not whole

    # train the first stage through the API: the browser shows the same run
    assert template_server.api("POST", "/api/run", json={"target": "train"}).status_code == 200
    tab.wait_for_selector('.vue-flow__node[data-id="train"] .nf-badge[data-state="done"]', timeout=90_000)
    assert state(tab, "vgg16") == "done" and state(tab, "finetune") == "idle"

    # the fine-tune node's inspector is a layer picker over the incoming model's blocks
    tab.locator('.vue-flow__node[data-id="finetune"] .nf-title').click()
    tab.wait_for_selector(".nf-layer-picker .nf-layer[data-layer=block5]")
    assert tab.locator(".nf-layer").count() >= 8
    # block5 shows ticked already (last_n=1 picks it): ticking block4 names both
    assert tab.locator(".nf-layer[data-layer=block5] .q-checkbox").get_attribute("aria-checked") == "true"
    tab.locator(".nf-layer[data-layer=block4] .q-checkbox").click()
    deadline = time.time() + 10
    while time.time() < deadline:
        graph = template_server.api("GET", "/api/graph").json()
        params = next(n for n in graph["nodes"] if n["id"] == "finetune")["params"]
        if params.get("unfreeze") == ["block4", "block5"]:
            break
        time.sleep(0.2)
    assert params["unfreeze"] == ["block4", "block5"]
    assert "from block4 on" in tab.locator(".nf-freeze-boundary").inner_text()

    # run just the fine-tune node: it runs, everything upstream comes from the cache
    watch_states(tab, "finetune")
    watch_states(tab, "train")
    tab.locator('.vue-flow__node[data-id="finetune"] .nf-run').click()
    tab.wait_for_selector('.vue-flow__node[data-id="finetune"] .nf-badge[data-state="done"]', timeout=60_000)
    assert set(seen(tab, "finetune")) & {"queued", "running"}
    assert "running" not in seen(tab, "train") and state(tab, "train") == "cached"
    assert state(tab, "vgg16") == "cached" and state(tab, "dataset") == "cached"

    # then the last trainer: its badge counts up and its curves appear while it trains
    watch_states(tab, "train_finetuned")
    tab.locator('.vue-flow__node[data-id="train_finetuned"] .nf-title').click()
    tab.locator("text=Run selected").click()
    tab.wait_for_selector('.vue-flow__node[data-id="train_finetuned"] .nf-badge[data-state="done"]', timeout=90_000)
    assert "running" in seen(tab, "train_finetuned")
    assert state(tab, "finetune") == "cached"
    tab.wait_for_selector(".nf-output .nf-chart canvas")
    assert tab.locator(".nf-output .nf-chart").count() >= 2  # loss and accuracy
    shot(tab, "editor-template-trained")

    # a data node shows what the model sees
    tab.locator('.vue-flow__node[data-id="formatter"] .nf-title').click()
    tab.wait_for_selector(".nf-samples img")
    assert errors == []
    tab.close()
    assert (ARTIFACTS / "editor-template.png").is_file()
