"""Comparing two runs in the editor, on the real catalogue and a graph that trains in seconds (a
frozen random ResNet-18 with a trained head, on generated pictures told apart by hue, 32 px):
``GET /api/runs/compare`` answers the difference with its interval and the flipped images (404 for
a run that is not there, 422 for a missing id, never a 5xx whatever the ids), and in headless
Chromium the Compare panel shows the interval and the flipped images, one of which opens its
confusion cell's gallery."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.compare import readable, readable_delta
from nodeflow.graph import Graph

from .conftest import Server, editor_tab, shot


def wait_done(server: Server, run_id: int) -> None:
    deadline = time.monotonic() + 300
    while (status := server.api("GET", f"/api/runs/{run_id}").json()["status"]) in ("queued", "running"):
        assert time.monotonic() < deadline, f"run {run_id} stayed {status}"
        time.sleep(0.2)
    assert status == "done", server.api("GET", f"/api/runs/{run_id}").json()


@pytest.fixture(scope="module")
def hue_server(tmp_path_factory):
    """An editor whose history holds two runs of one graph: its head trained for 1 epoch, then for 4."""
    from tests.imagegen import make_hue_set
    from tests.nodes.graphs import classifier_graph

    workspace = tmp_path_factory.mktemp("compare") / "workspace"
    workspace.mkdir()
    root = make_hue_set(workspace / "hue", per_class=40, size=32)
    data = classifier_graph(root, feature_extractor=True, epochs=1, lr=1e-3, trainer={"batch_size": 8}) \
        .model_dump(mode="json")
    data["nodes"].append({"id": "errors", "type": "eval.errors",
                          "params": {"split": "validation", "overlays": 0, "top_n": 10}})
    data["edges"] += [{"source": "train", "source_port": "model", "target": "errors", "target_port": "model"},
                      {"source": "fmt", "source_port": "data", "target": "errors", "target_port": "data"}]
    for i, node in enumerate(data["nodes"]):
        node["position"] = {"x": 60 + 260 * (i % 5), "y": 40 + 170 * (i // 5)}
    path = workspace / "hue.json"
    Graph.from_data(data).save(path)
    server = Server(workspace, "--builtin", "--graph", str(path))
    try:
        for epochs in (1, 4):
            graph = server.api("GET", "/api/graph").json()
            next(n for n in graph["nodes"] if n["id"] == "train")["params"]["epochs"] = epochs
            assert server.api("PUT", "/api/graph", json=graph).status_code == 200
            answer = server.api("POST", "/api/run", json={"target": "errors"})
            assert answer.status_code == 200, answer.text
            wait_done(server, answer.json()["id"])
        yield server
    finally:
        server.stop()


def test_the_api_compares_two_runs_image_by_image(hue_server):
    answer = hue_server.api("GET", "/api/runs/compare?a=1&b=2")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["params"] == {"train.epochs": {"from": 1, "to": 4}}
    accuracy = found["metrics"]["train.val_accuracy"]
    assert accuracy["split"] == "validation" and accuracy["images"] == {"a": 20, "b": 20}
    name = "train.val_accuracy"  # in percent: 55% → 70% (+15 points)
    assert accuracy["text"] == f"{readable(name, accuracy['a'])} → {readable(name, accuracy['b'])}" + (
        f" ({readable_delta(name, accuracy['delta'])})" if accuracy["delta"] else "")
    comparison = accuracy["comparison"]
    assert comparison["paired"] and comparison["images"] == 20
    low, high = comparison["ci"]
    assert low <= comparison["delta"] <= high and 0 <= comparison["p_value"] <= 1
    assert comparison["words"].startswith(("better (", "worse (", "no clear difference on 20 images"))
    entry = next(c for c in found["comparisons"] if c["node"] == "train" and c["split"] == "validation")
    assert entry["gallery"] == "errors"  # the error analysis of that model on that split
    flipped = [r for group in entry["flips"].values() for r in group["rows"]]
    assert flipped and all(r["gallery_url"] == f"/api/errors/errors/cells/{r['cell'][0]}/{r['cell'][1]}?run=2"
                           for r in flipped)
    # the gallery is the compared run's, whatever the open graph says now: with its error analysis
    # gone from the graph, a flipped image's cell still opens from run 2's stored result
    graph = hue_server.api("GET", "/api/graph").json()
    assert hue_server.api("POST", "/api/edit", json={"ops": [{"op": "remove_node", "id": "errors"}]}).status_code == 200
    try:
        assert hue_server.api("GET", flipped[0]["gallery_url"].split("?")[0]).status_code == 404  # the open graph's
        cell = hue_server.api("GET", flipped[0]["gallery_url"])
        assert cell.status_code == 200, cell.text
        assert cell.json()["count"] >= 1 and all(r["overlay_url"] is None or r["overlay_url"].endswith("?run=2")
                                                 for r in cell.json()["rows"])
    finally:
        assert hue_server.api("PUT", "/api/graph", json=graph).status_code == 200
    assert entry["flips"]["right_to_wrong"]["count"] + entry["flips"]["wrong_to_right"]["count"] == \
        comparison["right_to_wrong"] + comparison["wrong_to_right"]
    assert found["metrics"]["train.trainable_params"]["direction"] == 0  # a count: never better or worse
    assert found["metrics"]["train.val_loss"]["direction"] == -1
    # one verdict for the images: the error analysis of that model on that split reads the trainer's records
    error_rate = found["metrics"]["errors.error_rate"]
    assert error_rate["verdict"] == accuracy["verdict"] == comparison["verdict"]
    assert error_rate["comparison"]["p_value"] == comparison["p_value"]
    assert found["metrics"]["train.val_loss"]["verdict"] == "untested"  # no per-image record of a loss
    for name, m in found["metrics"].items():  # the interval and the p-value of every tested difference, tie or not
        if m.get("verdict") in ("better", "worse", "no clear difference"):
            assert "95% CI" in m["judged"] and ("p = " in m["judged"] or "p < " in m["judged"]), name


@pytest.mark.parametrize("query, status", [("a=1&b=99", 404), ("a=x&b=2", 404), ("a=-1&b=2", 404),
                                           ("a=1", 422), ("b=2", 422), ("a=" + "9" * 41 + "&b=1", 422)])
def test_a_run_that_is_not_there_is_a_404_and_a_missing_id_a_422(hue_server, query, status):
    answer = hue_server.api("GET", f"/api/runs/compare?{query}")
    assert answer.status_code == status, answer.text


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.text(max_size=50), st.integers(-5, 5).map(str)),
       st.one_of(st.text(max_size=50), st.integers(-5, 5).map(str)))
def test_any_ids_are_never_a_5xx_and_change_nothing(hue_server, a, b):
    before = hue_server.api("GET", "/api/runs").json()
    answer = hue_server.api("GET", "/api/runs/compare", params={"a": a, "b": b})
    assert answer.status_code in (200, 404, 422), (a, b, answer.status_code, answer.text)
    assert answer.json() is not None
    assert hue_server.api("GET", "/api/runs").json() == before


@pytest.mark.browser
def test_the_compare_panel_shows_the_interval_and_the_flipped_images(browser, hue_server):
    expected = hue_server.api("GET", "/api/runs/compare?a=1&b=2").json()
    entry = next(c for c in expected["comparisons"] if c["node"] == "train" and c["split"] == "validation")
    with editor_tab(browser, hue_server, "train", height=1000) as tab:
        tab.get_by_role("button", name="Runs").click()
        rows = tab.locator(".nf-runs-table tbody tr")
        rows.nth(1).wait_for()
        rows.nth(0).locator(".q-checkbox").click()
        rows.nth(1).locator(".q-checkbox").click()
        tab.get_by_role("button", name="Compare").click()
        diff = tab.locator(".nf-runs-diff")
        diff.wait_for(timeout=60_000)
        # the accuracy in percent with its images, and under it whether the change is real
        line = diff.locator(".nf-diff-metric", has_text="train.val_accuracy")
        assert " · 20 validation images" in line.inner_text()
        words = expected["metrics"]["train.val_accuracy"]["comparison"]["words"]
        assert diff.locator(".nf-diff-interval", has_text=words).count() >= 1
        # every metric's colour is its verdict's, and only that
        colour = {"better": "text-positive", "worse": "text-negative"}
        for shown in diff.locator(".nf-diff-metric").all():
            verdict = shown.get_attribute("data-verdict")
            classes = shown.get_attribute("class")
            assert colour.get(verdict, "text-grey-8") in classes, (shown.inner_text(), verdict, classes)
        # the images that flipped, most confidently wrong first, each opening its confusion cell
        flips = tab.locator('.nf-runs-flips[data-node="train"][data-split="validation"]')
        assert flips.locator(".nf-flips-words").inner_text() == entry["words"]
        direction = "right_to_wrong" if entry["flips"]["right_to_wrong"]["count"] else "wrong_to_right"
        group = flips.locator(f".nf-flips-{direction.replace('_', '-')}")
        first = entry["flips"][direction]["rows"][0]
        assert first["name"] in group.locator(".nf-flip").first.inner_text()
        shown = group.locator(".nf-flip").count()
        assert shown == min(12, entry["flips"][direction]["count"])
        shot(tab, "runs-compare-flips")
        group.locator(".nf-flip-cell").first.click()
        title = tab.locator(".nf-gallery-title")
        true, predicted = first["cell"]
        tab.wait_for_function("(t) => document.querySelector('.nf-gallery-title')?.innerText.startsWith(t) && "
                              "document.querySelector('.nf-gallery-grid')",
                              arg=f"True {true}, predicted {predicted}:", timeout=120_000)
        cell = hue_server.api("GET", first["gallery_url"]).json()
        assert title.inner_text().startswith(f"True {true}, predicted {predicted}: {cell['count']} ")
        assert "of the validation split" in title.inner_text()
        assert tab.locator(".nf-gallery-item").count() == len(cell["rows"]) >= 1
        shot(tab, "runs-compare-gallery")
