"""Authoring as a person sees it, in headless Chromium with the real catalogue and the cats-vs-dogs
template (generated images, no downloads): titles that follow the sizes typed in, the fine-tune
card naming its blocks, the bare word ``auto`` in a JSON field, a ReLU on the output layer shown as
a warning that lets the graph run, and "Export as Python" downloading a script that runs alone."""

from __future__ import annotations

import ast
import json

import pytest
from playwright.sync_api import expect

from .conftest import Server, editor_tab, tiny_template
from .test_browser_readable import VIEWPORT, select

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("authoring") / "workspace"
    workspace.mkdir()
    server = Server(workspace, "--builtin", "--graph", tiny_template(workspace))
    server.graph = json.loads((workspace / "tiny_template.json").read_text())
    yield server
    server.stop()


@pytest.fixture
def tab(browser, server):
    server.api("POST", "/api/stop")
    server.api("PUT", "/api/graph", json=server.graph)
    with editor_tab(browser, server, "evaluate", downloads=True, **VIEWPORT) as page:
        yield page


def card(tab, node: str, part: str = "nf-title"):
    return tab.locator(f'.vue-flow__node[data-id="{node}"] .{part}')


def open_form(tab, node: str, unique_param: str) -> None:
    """Select ``node`` and wait for its own form (``unique_param`` is one no other open form has)."""
    select(tab, node)
    tab.locator(f'.nf-inspector .nf-field[data-param="{unique_param}"]').wait_for()


def type_into(tab, param: str, value: str, control: str = "input") -> None:
    field = tab.locator(f'.nf-inspector .nf-field[data-param="{param}"] {control}')
    field.fill(value)
    field.press("Tab")


def choose(tab, param: str, option: str) -> None:
    tab.locator(f'.nf-inspector .nf-field[data-param="{param}"] .q-select').click()
    tab.get_by_role("option", name=option, exact=True).click()


def test_titles_follow_the_sizes_and_the_fine_tune_card_names_its_blocks(tab):
    expect(card(tab, "input")).to_have_text("Input layer (32×32×3)")
    open_form(tab, "input", "channels")
    type_into(tab, "height", "64")
    type_into(tab, "width", "64")
    expect(card(tab, "input")).to_have_text("Input layer (64×64×3)")
    open_form(tab, "formatter", "resize_to")
    type_into(tab, "height", "64")
    type_into(tab, "width", "64")
    expect(card(tab, "formatter")).to_have_text("Resize + crop to 64×64×3")

    open_form(tab, "finetune", "freeze_batchnorm")
    tab.locator(".nf-freeze-boundary").click()
    tab.get_by_role("option", name="from block3 on").click()
    expect(card(tab, "finetune")).to_have_text("Unfreeze block3, block4, block5")
    expect(card(tab, "finetune", "nf-summary")).to_contain_text("unfreeze=block3, block4, block5")
    assert "[3]" not in card(tab, "finetune", "nf-summary").inner_text()


def test_units_takes_the_bare_word_auto_and_an_output_layer_gets_no_activation(tab, server):
    tab.locator('.nf-palette-item[data-type="model.dense"]').dblclick()
    new = server.api("GET", "/api/graph").json()["nodes"][-1]["id"]
    expect(card(tab, new)).to_be_visible()
    expect(card(tab, new, "nf-summary")).to_contain_text("activation=relu")  # a hidden layer
    units = tab.locator('.nf-inspector .nf-field[data-param="units"]')
    type_into(tab, "units", "automatic", "textarea")
    expect(units.locator(".nf-field-error")).to_contain_text("Refused: not JSON")
    expect(units.locator(".nf-field-error")).to_contain_text("or auto")
    type_into(tab, "units", "auto", "textarea")
    expect(units.locator(".nf-field-error")).to_be_hidden()
    expect(card(tab, new, "nf-summary")).to_contain_text("units=auto")
    expect(card(tab, new, "nf-summary")).to_contain_text("activation=none")  # the output layer's default
    node = next(n for n in server.api("GET", "/api/graph").json()["nodes"] if n["id"] == new)
    assert node["params"] == {"units": "auto"}


def test_a_relu_on_the_output_layer_is_a_warning_that_lets_the_graph_run(tab, server):
    open_form(tab, "classifier", "activation")
    choose(tab, "activation", "relu")
    tab.get_by_role("button", name="Validate").click()
    dialog = tab.locator(".q-dialog")
    expect(dialog).to_contain_text("1 warning: the graph can run")
    expect(dialog.locator(".nf-problem-line")).to_have_text(
        "warning: classifier.activation: activation relu on the output layer (units 'auto'): the loss reads its "
        "outputs as class scores, which relu bends (relu clips every negative score to 0, so a wrong class cannot "
        "be pushed down); set activation to none")
    dialog.get_by_role("button", name="Close").click()
    expect(card(tab, "classifier", "nf-note-problem")).to_contain_text("activation relu on the output layer")
    expect(card(tab, "classifier", "nf-badge")).not_to_have_attribute("data-state", "invalid")
    problems = server.api("GET", "/api/validate").json()["problems"]
    assert [(p["node"], p["param"], p["severity"]) for p in problems] == [("classifier", "activation", "warning")]
    assert server.api("POST", "/api/run", json={"target": "classifier"}).status_code == 200  # not refused


def test_export_as_python_downloads_a_script_that_needs_no_nodeflow(tab, server):
    with tab.expect_download() as caught:
        tab.locator('button[aria-label="Export as Python"]').click()
    download = caught.value
    name = "cats_vs_dogs_feature_extraction_then_fine-tuning.py"  # from the graph's name: a document put by the API
    assert download.suggested_filename == name
    text = open(download.path(), encoding="utf-8").read()
    tree = ast.parse(text)
    assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)][-1] == "main"
    assert "import nodeflow" not in text and "from nodes" not in text
    assert f'DATASET_ROOT = "{server.graph["nodes"][5]["params"]["root"]}"' in text
    assert "TRAIN_EPOCHS = 1" in text and "def build_classifier(num_classes, pretrained=True):" in text
    expect(tab.locator(".q-notification")).to_contain_text(f"Exported {name}")
