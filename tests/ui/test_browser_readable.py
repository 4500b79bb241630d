"""The editor as a practitioner meets it, at 1440×900 in headless Chromium with the real catalogue
and the cats-vs-dogs template (generated 32-pixel images, VGG16 without downloaded weights):
readable cards, a failed node's whole error, the effective fine-tune selection, honest number
fields, the folder picker's roots, the Save-as dialog, and a console without errors.

Each test asserts what a person sees: visible text, on-screen font sizes, boxes that are not
clipped, colours that differ."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from nodeflow.ui.forms import human_count

from .conftest import editor_tab, shot, wait_until_still

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1440, "height": 900}
MIN_PX = 12.0
TEMPLATE_IDS = {"input", "vgg16", "flatten", "dense", "classifier", "dataset", "formatter", "train", "finetune",
                "train_finetuned", "evaluate"}


@pytest.fixture(scope="module")
def server(tiny_template_server):
    return tiny_template_server


@pytest.fixture
def tab(browser, server):
    """A 1440×900 tab on the template; a console error fails the test (no "Anchor: target #c… not
    found", no echart TypeError)."""
    server.api("POST", "/api/stop")
    server.api("PUT", "/api/graph", json=server.graph)
    with editor_tab(browser, server, "evaluate", console=True, **VIEWPORT) as page:
        yield page


def on_screen_px(page, selector: str) -> list[dict]:
    """Each match's text, its font size as drawn (CSS size × the canvas zoom), and whether its
    text is whole (nothing cut by an ellipsis or overflow)."""
    return page.eval_on_selector_all(selector, """els => els.map(el => {
        const style = getComputedStyle(el);
        const scale = el.getBoundingClientRect().width / el.offsetWidth;
        return {text: el.innerText, px: parseFloat(style.fontSize) * scale,
                whole: el.scrollWidth <= el.clientWidth + 1 && el.scrollHeight <= el.clientHeight + 1,
                ellipsis: style.textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth};
    })""")


def boxes(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(selector, """els => els.map(el => {
        const r = el.getBoundingClientRect();
        return {id: el.dataset.id, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
    })""")


def overlap(a: dict, b: dict) -> bool:
    return a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]


def rgb(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", text)[:3])


def select(page, node: str) -> None:
    page.locator(f'.vue-flow__node[data-id="{node}"] .nf-title').click()
    page.wait_for_selector(f'.vue-flow__node[data-id="{node}"] .nf-node.nf-selected')


def test_cards_are_readable_and_whole_at_the_default_fit(tab):
    titles = on_screen_px(tab, ".vue-flow__node .nf-title")
    summaries = on_screen_px(tab, ".vue-flow__node .nf-summary")
    assert len(titles) == len(TEMPLATE_IDS) and len(summaries) == len(TEMPLATE_IDS)
    for item in titles + summaries:
        assert item["px"] >= MIN_PX, f"{item['text']!r} is drawn at {item['px']:.1f} px"
        assert item["whole"] and not item["ellipsis"], f"{item['text']!r} is cut"
    shown = {t["text"].replace("\n", " ") for t in titles}
    # the input layer's title follows its size (the tiny template's 32 px), not the template's 150
    assert {"Input layer (32×32×3)", "Train the new head", "Unfreeze the last block"} <= shown
    assert "split=test" in " ".join(s["text"] for s in summaries)

    # every card lies wholly inside the canvas, apart from the others, the minimap and the controls
    canvas = boxes(tab, ".nf-canvas")[0]
    cards = boxes(tab, ".vue-flow__node")
    furniture = boxes(tab, ".vue-flow__minimap") + boxes(tab, ".vue-flow__controls")
    for card in cards:
        assert canvas["x0"] <= card["x0"] and card["x1"] <= canvas["x1"], f"{card['id']} is cut off"
        assert canvas["y0"] <= card["y0"] and card["y1"] <= canvas["y1"], f"{card['id']} is cut off"
        assert not any(overlap(card, f) for f in furniture), f"{card['id']} is under the minimap/controls"
        assert not any(overlap(card, other) for other in cards if other["id"] != card["id"]), card["id"]

    # one word for "not run yet", as on a first start
    badges = tab.eval_on_selector_all(".vue-flow__node .nf-badge", "els => els.map(e => e.innerText)")
    assert set(badges) == {"not run"}

    # a Model port and a TrainedModel port are told apart at a glance
    model = tab.locator('.vue-flow__node[data-id="vgg16"] .nf-handle[data-port-type="Model"]').first
    trained = tab.locator('.vue-flow__node[data-id="train"] .nf-handle[data-port-type="TrainedModel"]').first
    a = rgb(model.evaluate("e => getComputedStyle(e).backgroundColor"))
    b = rgb(trained.evaluate("e => getComputedStyle(e).backgroundColor"))
    assert sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5 > 120, (a, b)

    # nothing the editor draws waits for a font download: every request stays on this server
    assert all(u.startswith(("http://127.0.0.1", "data:", "blob:")) for u in tab.requests), tab.requests
    assert tab.evaluate("document.fonts.check('24px \"Material Icons\"')")


def test_a_failed_node_shows_its_whole_error_and_links_to_the_param(tab, server):
    # fractions that leave no training images: the dataset node fails when it runs, naming the param
    server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "dataset",
                                                   "params": {"validation_fraction": 0.6, "test_fraction": 0.5}}]})
    assert server.api("POST", "/api/run", json={"target": "dataset"}).status_code == 200
    tab.wait_for_selector('.vue-flow__node[data-id="dataset"] .nf-badge[data-state="failed"]', timeout=60_000)
    message = server.api("GET", "/api/status").json()["nodes"]["dataset"]["error"]
    assert "validation_fraction" in message

    # the card's error opens the Output tab, which starts with the whole message, wrapped
    tab.locator('.vue-flow__node[data-id="dataset"] .nf-error').click()
    text = tab.locator(".nf-output .nf-error-text")
    text.wait_for()
    wait_until_still(tab, ".nf-output .nf-error-text")  # the tab panel slides in
    assert " ".join(text.inner_text().split()) == " ".join(message.split())
    panel = boxes(tab, ".nf-right-drawer")[0]
    box = text.bounding_box()
    assert box["x"] >= panel["x0"] and box["x"] + box["width"] <= panel["x1"] + 1
    assert text.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    first = tab.locator(".nf-output > *").first
    assert "failed" in first.inner_text()
    cards = boxes(tab, ".vue-flow__node")  # the card's excerpt of the error pushes into no other card
    assert not any(overlap(a, b) for a in cards for b in cards if a["id"] < b["id"])

    # the param it names is a link to that field of the node's form
    tab.locator(".nf-error-param").click()
    tab.wait_for_function("() => document.activeElement && document.activeElement.closest("
                          "'.nf-field[data-param=\"validation_fraction\"]')")
    assert tab.locator('.nf-inspector .nf-field[data-param="validation_fraction"]').is_visible()
    assert "dataset" in tab.locator(".nf-inspector").inner_text()

    # log lines wrap inside the footer, and the log shows its newest line
    lines = tab.locator(".nf-log .q-scrollarea__content > *")
    assert lines.count() >= 1
    log_box = boxes(tab, ".nf-log")[0]
    for right in lines.evaluate_all("els => els.map(e => e.getBoundingClientRect().right)"):
        assert right <= log_box["x1"] + 1
    tab.reload()
    tab.wait_for_selector('.vue-flow__node[data-id="evaluate"] .nf-title')
    tab.wait_for_function("""() => { const a = document.querySelector('.nf-log .q-scrollarea__container');
        return a.scrollHeight <= a.clientHeight + 2 || a.scrollTop + a.clientHeight >= a.scrollHeight - 2; }""",
                          timeout=10_000)


def test_fine_tune_picker_shows_what_will_train(tab, server):
    select(tab, "finetune")
    tab.wait_for_selector(".nf-layer-picker .nf-layer[data-layer=block5]")
    box5 = tab.locator(".nf-layer[data-layer=block5] .q-checkbox")
    assert box5.get_attribute("aria-checked") == "true"
    assert tab.locator(".nf-layer[data-layer=block4] .q-checkbox").get_attribute("aria-checked") == "false"
    assert "no layer is named, so last_n = 1" in tab.locator(".nf-layer-source").inner_text()
    shown = int(tab.locator(".nf-layer-total").get_attribute("data-params"))
    assert human_count(shown) in tab.locator(".nf-layer-total").inner_text()

    # the same number the fine-tune node reports when it runs
    assert server.api("POST", "/api/run", json={"target": "finetune"}).status_code == 200
    tab.wait_for_selector('.vue-flow__node[data-id="finetune"] .nf-badge[data-state="done"]', timeout=180_000)
    metrics = server.api("GET", "/api/status").json()["nodes"]["finetune"]["metrics"]
    assert metrics["trainable_params"] == shown

    # ticking block4 adds to what trains, and the automatic title follows
    tab.locator(".nf-layer[data-layer=block4] .q-checkbox").click()
    deadline = time.time() + 10
    while time.time() < deadline:
        node = next(n for n in server.api("GET", "/api/graph").json()["nodes"] if n["id"] == "finetune")
        if node["params"].get("unfreeze") == ["block4", "block5"]:
            break
        time.sleep(0.2)
    assert node["params"]["unfreeze"] == ["block4", "block5"]
    card_title = tab.locator('.vue-flow__node[data-id="finetune"] .nf-title')
    tab.wait_for_function("() => document.querySelector('.vue-flow__node[data-id=\"finetune\"] .nf-title')"
                          ".innerText.includes('block4')")
    assert card_title.inner_text().replace("\n", " ") == "Unfreeze block4, block5"
    expect(tab.locator(".nf-layer-source")).to_contain_text("named in 'unfreeze'")
    assert int(tab.locator(".nf-layer-total").get_attribute("data-params")) > shown

    # unticking every block trains none of them: nothing named, and last_n set to 0 in its field
    for block in ("block4", "block5"):
        tab.locator(f".nf-layer[data-layer={block}] .q-checkbox").click()
        expect(tab.locator(f".nf-layer[data-layer={block}] .q-checkbox")).to_have_attribute("aria-checked", "false")
    expect(card_title).to_have_text("Unfreeze nothing")
    expect(tab.locator('.nf-field[data-param="last_n"] input')).to_have_value("0")
    node = next(n for n in server.api("GET", "/api/graph").json()["nodes"] if n["id"] == "finetune")
    assert node["params"]["unfreeze"] == [] and node["params"]["last_n"] == 0


def test_out_of_range_numbers_are_refused_with_the_reason(tab, server):
    select(tab, "train")
    epochs = tab.locator('.nf-field[data-param="epochs"]')
    lr_label = tab.locator('.nf-field[data-param="lr"] label').inner_text()
    assert "(0 … 10]" in lr_label  # 0 is excluded, 10 allowed
    assert "[1 … 10000]" in epochs.locator("label").inner_text()
    for value, reason in (("20000", "less than or equal to 10000"), ("0", "greater than or equal to 1")):
        field = epochs.locator("input")
        field.fill(value)
        field.press("Tab")
        error = epochs.locator(".nf-field-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text(reason)
        assert "Refused" in error.inner_text()
        assert field.input_value() == value  # not clamped behind the user's back
        node = next(n for n in server.api("GET", "/api/graph").json()["nodes"] if n["id"] == "train")
        assert node["params"]["epochs"] == 1
    lr = tab.locator('.nf-field[data-param="lr"]')
    lr.locator("input").fill("0")
    lr.locator("input").press("Tab")
    lr.locator(".nf-field-error").wait_for(state="visible")
    assert "greater than 0" in lr.locator(".nf-field-error").inner_text()


def test_folder_picker_offers_every_allowed_root_with_drawn_icons(tab, server):
    select(tab, "dataset")
    tab.locator('.nf-field[data-param="root"] .nf-pick-folder').click()
    picker = tab.locator(".nf-folder-picker")
    picker.wait_for()
    entries = picker.locator(".nf-folder")
    texts = entries.all_inner_texts()
    assert any(t.startswith("workspace") for t in texts) and str(server.datasets) in texts
    # the dialog scales in: measure the icons once it has settled (a slow box animates for longer)
    tab.wait_for_function("""() => {
        const icons = [...document.querySelectorAll('.nf-folder-picker svg.nf-folder-icon')];
        return icons.length > 0 && icons.every(i => {
            const box = i.getBoundingClientRect();
            return box.width >= 12 && box.height >= 12;
        });
    }""", timeout=5000)
    assert picker.locator("svg.nf-folder-icon").count() == len(texts)
    entries.filter(has_text=str(server.datasets)).click()
    picker.locator(".nf-folder", has_text="pets").click()
    expect(picker.locator(".nf-folder-title")).to_contain_text("pets")
    picker.get_by_text("Choose this folder").click()
    field = tab.locator('.nf-field[data-param="root"] input')
    tab.wait_for_function("(p) => document.querySelector('.nf-field[data-param=\"root\"] input').value === p",
                          arg=str(server.datasets / "pets"))
    assert field.input_value() == str(server.datasets / "pets")


def test_loading_a_template_over_another_graph_edits_nothing_old(tab, server):
    ops = [{"op": "add_node", "type": "eval.evaluate", "id": "evaluate_2", "position": {"x": 40, "y": 800}}]
    server.api("POST", "/api/edit", json={"ops": ops})
    tab.wait_for_selector('.vue-flow__node[data-id="evaluate_2"]')
    tab.locator('[aria-label="Templates"]').click()
    tab.locator(".nf-template[data-template=cats_vs_dogs_finetune]").click()
    tab.get_by_role("button", name="Discard").click()  # the edit above left unsaved changes
    tab.wait_for_selector('.vue-flow__node[data-id="evaluate_2"]', state="detached")
    tab.wait_for_timeout(1500)  # no event to wait for: a refused edit from the old canvas would show by now
    toasts = tab.locator(".q-notification").all_inner_texts()
    assert not any("Refused" in t for t in toasts), toasts
    ids = {n["id"] for n in server.api("GET", "/api/graph").json()["nodes"]}
    assert ids == TEMPLATE_IDS
    badges = tab.eval_on_selector_all(".vue-flow__node .nf-badge", "els => els.map(e => e.innerText)")
    assert set(badges) <= {"not run", "done", "cached", "invalid"} and "stale" not in badges


def test_save_as_suggests_a_plain_name_and_refuses_bad_ones(tab, server):
    tab.locator('[aria-label="Save as"]').click()
    name = tab.locator(".nf-save-as input")
    name.wait_for()
    default = name.input_value()
    assert default.endswith(".json") and not re.search(r"[:\s]", default), default
    problem = tab.locator(".nf-save-problem")
    for bad, reason in (("bad\x00name", "NUL"), ("a:b", "':'"), ("../outside", "'..'")):
        name.fill(bad)
        name.press("Enter")
        expect(problem).to_be_visible()
        expect(problem).to_contain_text(reason)  # waits: the previous name's reason may still show
        assert tab.locator(".nf-save-as").is_visible()  # still open, nothing lost
    name.fill("plain")
    name.press("Enter")
    tab.locator(".nf-save-as").wait_for(state="hidden")
    assert (server.workspace / "plain.json").is_file()


def test_the_template_opens_as_its_five_course_parts(tab):
    parts = {"Model": {"input", "vgg16", "flatten", "dense", "classifier"}, "Data": {"dataset"},
             "Formatting": {"formatter"}, "Training": {"train"},
             "Fine-tuning": {"finetune", "train_finetuned", "evaluate"}}
    frames = tab.locator(".nf-frame")
    expect(frames).to_have_count(5)
    found = {}
    for index in range(5):
        frame = frames.nth(index)
        title = frame.locator(".nf-group-title")
        found[title.inner_text()] = frame.bounding_box()
        group = frame.get_attribute("data-group")
        assert on_screen_px(tab, f'.nf-frame[data-group="{group}"] .nf-group-title')[0]["px"] >= MIN_PX
    assert set(found) == set(parts)
    cards = {c["id"]: c for c in boxes(tab, ".vue-flow__node")}
    for title, members in parts.items():
        f = found[title]
        frame = {"x0": f["x"], "y0": f["y"], "x1": f["x"] + f["width"], "y1": f["y"] + f["height"]}
        for node in members:  # each part's cards inside its frame, and no other card
            c = cards[node]
            assert frame["x0"] <= c["x0"] and c["x1"] <= frame["x1"], (title, node)
            assert frame["y0"] <= c["y0"] and c["y1"] <= frame["y1"], (title, node)
        assert not any(overlap(cards[n], frame) for n in TEMPLATE_IDS - members), title
    shot(tab, "template-groups")


def test_help_text_reads_as_plain_words(tab, server):
    ops = [{"op": "add_node", "type": "eval.errors", "id": "errors", "position": {"x": 40, "y": 900}}]
    assert server.api("POST", "/api/edit", json={"ops": ops}).status_code == 200
    tab.wait_for_selector('.vue-flow__node[data-id="errors"]')
    select(tab, "errors")
    expect(tab.locator(".nf-inspector")).to_contain_text("what the network looked at when it erred")
    help_text = tab.locator(".nf-inspector").inner_text()
    assert "with their overlays (cell_gallery)." in help_text
    assert ":meth:" not in help_text and "`" not in help_text
    tab.locator('.nf-palette-item[data-type="eval.errors"]').hover()
    expect(tab.locator(".q-tooltip")).to_contain_text("Lists the misclassified images")
    assert ":meth:" not in tab.locator(".q-tooltip").inner_text()
