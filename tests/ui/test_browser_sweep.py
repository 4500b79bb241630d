"""A learning-rate sweep from the editor in headless Chromium, with the real catalogue on a graph
that trains in seconds (generated 32-pixel images, ResNet-18 without downloaded weights): the
param's Sweep dialog judged on a validation metric by default (a test metric allowed, with a warning),
a refused value named, two branches trained through the editor's queue, the results table in
percent with the two branches a tie (two validation images cannot tell them apart), the curves
overlaid, and the best values by value applied."""

from __future__ import annotations

import re

import pytest

from nodeflow.graph import Graph

from .conftest import Server, editor_tab, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def train_server(tmp_path_factory):
    from tests.imagegen import make_image_set
    from tests.nodes.graphs import classifier_graph

    workspace = tmp_path_factory.mktemp("sweep") / "workspace"
    workspace.mkdir()
    images = make_image_set(workspace / "images", per_class=8)
    data = classifier_graph(images, arch="resnet18", epochs=2, lr=1e-3, trainer={"batch_size": 8}) \
        .model_dump(mode="json")
    columns = {"input": (0, 0), "backbone": (0, 1), "pool": (0, 2), "out": (0, 3), "data": (1, 0), "fmt": (1, 1),
               "train": (2, 1), "eval": (3, 1)}
    for node in data["nodes"]:  # laid out apart, so each card can be clicked
        column, row = columns[node["id"]]
        node["position"] = {"x": 60 + 280 * column, "y": 40 + 150 * row}
    path = workspace / "tiny.json"
    Graph.from_data(data).save(path)
    server = Server(workspace, "--builtin", "--graph", str(path))
    yield server
    server.stop()


@pytest.fixture
def tab(browser, train_server):
    with editor_tab(browser, train_server, "train") as page:
        yield page


@pytest.mark.slow
def test_a_learning_rate_sweep_from_the_params_form(tab, train_server):
    tab.locator('.vue-flow__node[data-id="train"] .nf-title').click()
    tab.get_by_role("button", name="Sweep lr…").click()
    dialog = tab.locator(".nf-sweep-dialog")
    dialog.wait_for()
    assert dialog.locator(".text-h6").inner_text() == "Sweep train.lr"
    assert "eval" in dialog.locator(".nf-sweep-target").inner_text()  # runs up to the evaluation below the trainer
    # but is judged on validation: the test split is held out for the end
    judge = dialog.locator(".nf-sweep-metric")
    assert "train.val_accuracy (validation)" in judge.inner_text()
    warning = dialog.locator(".nf-sweep-warning")
    assert not warning.is_visible()
    judge.click()  # a test metric may be chosen, with a plain warning
    tab.locator(".q-menu .q-item", has_text="eval.accuracy (test: held out, for the end)").click()
    warning.wait_for()
    assert warning.inner_text().startswith("eval.accuracy is measured on the test split: the branch chosen by it "
                                           "has an optimistic test figure")
    judge.click()
    tab.locator(".q-menu .q-item", has_text="train.val_accuracy (validation)").click()
    warning.wait_for(state="hidden")
    values = dialog.locator(".nf-sweep-values input")

    # a value the param refuses is named before anything runs
    values.fill("0.001, 50")
    tab.wait_for_function("() => document.querySelector('.nf-sweep-branches').innerText === '2 branches'")
    dialog.get_by_role("button", name="Start sweep").click()
    error = dialog.locator(".nf-sweep-error")
    error.wait_for()
    assert error.inner_text() == "train.lr: 50 is outside the allowed range (0 … 10]"
    assert train_server.api("GET", "/api/runs").json() == []

    values.fill("0.001, 0.01")
    tab.wait_for_function("() => document.querySelector('.nf-sweep-preview').innerText === '0.001, 0.01'")
    error.wait_for(state="hidden")  # the refusal goes once the values change
    assert dialog.locator(".nf-sweep-branches").inner_text() == "2 branches"
    shot(tab, "sweep-dialog")
    dialog.get_by_role("button", name="Start sweep").click()

    results = tab.locator(".nf-sweep-results")
    results.wait_for()
    progress = results.locator(".nf-sweep-progress")
    tab.wait_for_function("() => /branch [12] of 2/.test(document.querySelector('.nf-sweep-progress').innerText)",
                          timeout=30_000)
    tab.wait_for_function("() => document.querySelector('.nf-sweep-progress').innerText.includes('2 of 2 branches')",
                          timeout=240_000)
    assert progress.inner_text() == "2 of 2 branches finished · done"

    table = results.locator(".nf-sweep-table")
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert headers[:5] == ["#", "train.lr", "Status", "train.val_accuracy", "Time"]  # ranked on validation
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    cells = [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(2)]
    assert [c[1] for c in cells] == ["0.001", "0.01"] and [c[2] for c in cells] == ["done", "done"]
    accuracies = [float(c[3].rstrip("%")) / 100 for c in cells]  # in percent, as people read them
    assert all(re.fullmatch(r"\d+(\.\d)?%", c[3]) for c in cells) and all(0.0 <= a <= 1.0 for a in accuracies)
    assert all(re.fullmatch(r"\d+\.\ds", c[4]) for c in cells)
    # two validation images cannot tell two branches apart: no star, a tie, and the results say why
    assert table.locator('tbody tr[data-best="true"]').count() == 0
    assert [c[-1] for c in cells] == ["= tie", "= tie"]
    judgement = results.locator(".nf-sweep-judgement").inner_text()
    assert judgement.startswith("Judged at train.val_accuracy (validation): tie: branch ") and \
        "no clear difference on 2 images" in judgement, judgement
    assert not results.locator(".nf-sweep-results-warning").is_visible()
    best_row = train_server.api("GET", "/api/sweeps/1").json()["best"]  # the best by value, which Apply takes
    assert accuracies[best_row] == max(accuracies)

    # the branches' curves in one chart, each line named in the legend by its branch's value
    chart = results.locator(".nf-sweep-chart svg")
    chart.wait_for()
    assert chart.locator("text", has_text="train.val_accuracy").count() == 1
    legend = [t.strip() for t in chart.locator("text").all_text_contents()]
    assert "lr=0.001" in legend and "lr=0.01" in legend, legend
    shot(tab, "sweep-results")

    # the best branch's learning rate into the graph, as one undo step
    results.get_by_role("button", name="Apply best").click()
    chosen = cells[best_row][1]
    tab.wait_for_function(
        "(lr) => document.querySelector('.vue-flow__node[data-id=train] .nf-summary').innerText.includes('lr=' + lr)",
        arg=chosen, timeout=5000)
    graph = train_server.api("GET", "/api/graph").json()
    assert next(n for n in graph["nodes"] if n["id"] == "train")["params"]["lr"] == float(chosen)
