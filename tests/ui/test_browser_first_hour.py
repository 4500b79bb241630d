"""What a new user meets in the first hour, in headless Chromium: a backbone's title that follows
its params (and one the person typed, which stays); the templates' groups, none of whose titles a
card covers, not even one with a warning; a duplicate that lands clear of what it copies; Paste and
Group on a card's right-click menu; and the "Reopened ..." notice, said once per browser tab.

Each test asserts what is on screen; the server's document only confirms it."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from nodeflow.recent import remember
from nodeflow.templates import template_path

from .conftest import Server, editor_tab, shot, wait_for_fit
from .test_browser_authoring import box_select, tab  # noqa: F401 (tab: the authoring tests' fixture)
from .server import demo_graph

pytestmark = pytest.mark.browser
SELECTED = re.compile(r"\bselected\b")


#: the tests hold whatever other modules ran on the process's shared test-pack editor (conftest's pack_server)
SHARES_PACK_SERVER = True


def card(tab, node: str):
    return tab.locator(f'.vue-flow__node[data-id="{node}"]')


def title_of(tab, node: str):
    return card(tab, node).locator(".nf-title")


def boxes(tab, selector: str) -> dict[str, dict]:
    """The boxes on screen of what ``selector`` matches, by their node id or group id."""
    found = tab.eval_on_selector_all(selector, """els => els.map(el => {
        const r = el.getBoundingClientRect();
        const key = el.dataset.id || el.dataset.group || el.closest('[data-group]').dataset.group;
        return {key, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
    })""")
    return {b["key"]: b for b in found}


def overlap(a: dict, b: dict) -> bool:
    return a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]


def graph(server) -> dict:
    return server.api("GET", "/api/graph").json()


# -- the real catalogue, offline: a backbone with ImageNet weights shows its warning ---------------------
@pytest.fixture(scope="module")
def builtin_server(tiny_template_server):
    """The built-in catalogue, offline (conftest's ``tiny_template_server``): ImageNet weights are
    neither here nor reachable, so each backbone with them warns on its card. Each test puts the
    template it opens."""
    return tiny_template_server


def open_template(browser, server, name: str, **changes):
    """A tab on the template ``name``, with ``changes`` (node id -> fields) made to its nodes first."""
    data = json.loads(template_path(name).read_text())
    for node in data["nodes"]:
        node.update(changes.get(node["id"], {}))
    server.api("POST", "/api/stop")
    assert server.api("PUT", "/api/graph", json=data).status_code == 200
    return editor_tab(browser, server, data["nodes"][-1]["id"], width=1440, height=900)


def form(tab, node: str, field: str):
    title_of(tab, node).click()
    expect(card(tab, node).locator(".nf-node")).to_have_class(re.compile("nf-selected"))
    return tab.locator(f'.nf-inspector .nf-field[data-param="{field}"]')


def choose(tab, node: str, param: str, option: str) -> None:
    form(tab, node, param).locator(".q-select").click()
    tab.get_by_role("option", name=option, exact=True).click()


def test_a_backbones_title_follows_its_params_and_a_typed_title_stays(browser, builtin_server):
    with open_template(browser, builtin_server, "cats_vs_dogs_finetune") as tab:
        expect(title_of(tab, "vgg16")).to_have_text("VGG16 feature extractor")
        choose(tab, "vgg16", "arch", "resnet18")
        expect(title_of(tab, "vgg16")).to_have_text("ResNet-18 feature extractor")
        form(tab, "vgg16", "feature_extractor").locator(".q-toggle").click()
        expect(title_of(tab, "vgg16")).to_have_text("ResNet-18, ImageNet weights")

        tab.locator(".nf-inspector").get_by_label("Title").fill("My backbone")  # the person names it
        expect(title_of(tab, "vgg16")).to_have_text("My backbone")
        choose(tab, "vgg16", "arch", "vgg16")
        expect(card(tab, "vgg16").locator(".nf-summary")).to_contain_text("arch=vgg16")
        expect(title_of(tab, "vgg16")).to_have_text("My backbone")  # a typed title stays
        assert next(n for n in graph(builtin_server)["nodes"] if n["id"] == "vgg16")["title"] == "My backbone"

    # a project made from the templates before titles followed: its title is the one that follows
    weights = builtin_server.datasets / "my-resnet18.pth"  # a file this server may read
    weights.write_bytes(b"weights")
    with open_template(browser, builtin_server, "hotdog_resnet18_finetune",
                       resnet18_ft={"title": "ResNet-18, ImageNet weights"}) as tab:
        expect(title_of(tab, "resnet18_ft")).to_have_text("ResNet-18, ImageNet weights")
        expect(title_of(tab, "resnet18_sc")).to_have_text("ResNet-18, random weights")
        field = form(tab, "resnet18_ft", "weights").locator("input")
        field.fill(str(weights))
        field.press("Tab")
        expect(title_of(tab, "resnet18_ft")).to_have_text("ResNet-18, weights from my-resnet18.pth")


TEMPLATE_PARTS = {
    "cats_vs_dogs_finetune": {"Model": {"input", "vgg16", "flatten", "dense", "classifier"}, "Data": {"dataset"},
                              "Formatting": {"formatter"}, "Training": {"train"},
                              "Fine-tuning": {"finetune", "train_finetuned", "evaluate"}},
    "hotdog_resnet18_finetune": {"Pretrained model": {"input", "resnet18_ft", "pool_ft", "fc_ft"},
                                 "Fine-tuning": {"train_ft", "evaluate_ft"}, "Data": {"dataset"},
                                 "Formatting and augmentation": {"formatter", "augment"},
                                 "Comparison": {"compare"},
                                 "From scratch": {"resnet18_sc", "pool_sc", "fc_sc", "train_sc", "evaluate_sc"}},
}


@pytest.mark.parametrize("name", list(TEMPLATE_PARTS))
def test_a_template_opens_as_its_course_parts_and_no_card_covers_a_group_title(browser, builtin_server, name):
    """With the backbone's offline warning on its card (its tallest look), every group title is
    clear of every card, no two frames overlap, and each part's cards lie inside its frame."""
    parts = TEMPLATE_PARTS[name]
    with open_template(browser, builtin_server, name) as tab:
        warned = "vgg16" if name.startswith("cats") else "resnet18_ft"
        expect(card(tab, warned).locator(".nf-problem")).to_contain_text("cannot be reached")
        expect(tab.locator(".nf-frame")).to_have_count(len(parts))
        wait_for_fit(tab)
        cards = boxes(tab, ".vue-flow__node")
        frames = boxes(tab, ".nf-frame")
        heads = boxes(tab, ".nf-frame-head")
        titles = dict(zip(tab.eval_on_selector_all(".nf-frame", "els => els.map(e => e.dataset.group)"),
                          tab.locator(".nf-frame .nf-group-title").all_inner_texts()))
        shot(tab, f"first-hour-{name}")
    assert set(titles.values()) == set(parts)
    for group, title in titles.items():
        covering = [node for node, box in cards.items() if overlap(box, heads[group])]
        assert not covering, f"the title of '{title}' is covered by {covering}"
        others = [titles[g] for g in frames if g != group and overlap(frames[g], frames[group])]
        assert not others, f"the frame of '{title}' overlaps {others}"
        frame = frames[group]
        for node in parts[title]:
            box = cards[node]
            assert frame["x0"] <= box["x0"] and box["x1"] <= frame["x1"], (title, node)
            assert frame["y0"] <= box["y0"] and box["y1"] <= frame["y1"], (title, node)


# -- the test node pack: duplicate, the card's menu ---------------------------------------------------
def wait_in_view(tab, nodes: list[str]) -> None:
    """Until the cards ``nodes`` lie wholly inside the canvas (the view pans to a duplicate)."""
    tab.wait_for_function("""(ids) => {
        const c = document.querySelector('.nf-canvas').getBoundingClientRect();
        return ids.every((id) => {
            const r = document.querySelector(`.vue-flow__node[data-id="${id}"]`).getBoundingClientRect();
            return r.left >= c.left && r.right <= c.right && r.top >= c.top && r.bottom <= c.bottom;
        });
    }""", arg=nodes)


def right_click(tab, node: str) -> None:
    box = title_of(tab, node).bounding_box()
    tab.mouse.click(box["x"] + 10, box["y"] + box["height"] / 2, button="right")
    tab.locator(".nf-menu").wait_for()


def menu_choose(tab, action: str) -> None:
    tab.locator(f'.nf-menu-item[data-action="{action}"]').click()
    tab.locator(".nf-menu").wait_for(state="detached")


def test_ctrl_d_puts_the_copies_clear_of_every_card_and_in_view(tab, pack_server):
    title_of(tab, "slow").click()
    tab.keyboard.press("Control+d")  # desc is beside slow and add2 below it: the copy goes past desc
    expect(card(tab, "slow_2")).to_be_visible()
    expect(card(tab, "slow_2")).to_have_class(SELECTED)
    wait_in_view(tab, ["slow_2"])  # placed past the view's edge, and the view follows
    on_screen = boxes(tab, ".vue-flow__node")
    copy = on_screen.pop("slow_2")
    assert not [n for n, box in on_screen.items() if overlap(box, copy)], (copy, on_screen)
    assert copy["x0"] >= on_screen["slow"]["x1"] or copy["y0"] >= on_screen["slow"]["y1"]  # beside or below

    tab.locator(".vue-flow__controls-fitview").click()  # back to the whole graph
    box_select(tab, ["c1", "c2", "add"])
    tab.keyboard.press("Control+d")
    for node in ("c1_2", "c2_2", "add_2"):
        expect(card(tab, node)).to_be_visible()
    wait_in_view(tab, ["c1_2", "c2_2", "add_2"])
    on_screen = boxes(tab, ".vue-flow__node")
    copies = [on_screen.pop(n) for n in ("c1_2", "c2_2", "add_2")]
    assert not [(n, c) for c in copies for n, box in on_screen.items() if overlap(box, c)]
    shot(tab, "first-hour-duplicated")


def test_a_cards_menu_pastes_beside_it_and_groups_it_even_out_of_its_group(tab, pack_server):
    box_select(tab, ["c1", "c2", "add"])
    tab.keyboard.press("Control+g")  # as a template opens: every card in a group
    expect(tab.locator('.nf-frame[data-group="group"]')).to_be_visible()
    tab.locator(".vue-flow__pane").click(position={"x": 20, "y": 20})

    right_click(tab, "add")
    items = [i.split("\n")[0] for i in tab.locator(".nf-menu-item").all_inner_texts()]
    assert items == ["Run to here", "Duplicate", "Copy", "Paste", "Disable", "Group", "Ungroup", "Delete"], items
    menu_choose(tab, "copy")
    expect(tab.locator(".q-notification", has_text="Copied 1 node")).to_be_visible()
    right_click(tab, "add2")
    menu_choose(tab, "paste")
    expect(card(tab, "add_2")).to_be_visible()
    pasted, beside = card(tab, "add_2").bounding_box(), card(tab, "add2").bounding_box()
    assert pasted["x"] >= beside["x"] + beside["width"] and abs(pasted["y"] - beside["y"]) < 30  # beside, not on it

    right_click(tab, "add")  # in the group: Group takes it out into a group of its own
    menu_choose(tab, "group")
    expect(tab.locator(".nf-frame")).to_have_count(2)
    groups = {tuple(g["members"]): g["title"] for g in graph(pack_server)["groups"]}
    assert groups == {("c1", "c2"): "Group", ("add",): "Group"}
    frames = boxes(tab, ".nf-frame")
    assert not overlap(boxes(tab, ".vue-flow__node")["add"], frames["group"])  # it left the first frame
    tab.keyboard.press("Control+z")  # one step
    expect(tab.locator(".nf-frame")).to_have_count(1)
    assert [g["members"] for g in graph(pack_server)["groups"]] == [["c1", "c2", "add"]]


# -- the notice -------------------------------------------------------------------------------------
def test_the_reopened_notice_shows_once_per_tab_not_on_each_reload(browser, tmp_path):
    workspace = tmp_path / "workspace"
    mine = workspace / "mine.json"
    demo_graph().save(mine)
    remember(workspace, mine, "demo", None, False)  # the editor stopped with mine.json open
    server = Server(workspace, "--reopen")
    try:
        with editor_tab(browser, server, "desc") as tab:
            notice = tab.locator(".nf-notice")
            expect(notice).to_contain_text("Reopened mine.json, as it was when the editor stopped")
            tab.reload()
            tab.wait_for_selector('.vue-flow__node[data-id="desc"]')
            wait_for_fit(tab)
            title_of(tab, "desc").click()  # the server's answer comes after anything it said on loading
            expect(tab.locator(".nf-inspector-title")).to_be_visible()
            expect(notice).to_have_count(0)
            again = tab.context.new_page()  # another tab: told once there too
            again.goto(server.url + "/")
            expect(again.locator(".nf-notice")).to_contain_text("Reopened mine.json")
            again.close()
    finally:
        server.stop()
