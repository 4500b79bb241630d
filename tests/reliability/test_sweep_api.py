"""``POST /api/sweep`` and ``GET /api/sweeps/{id}`` against a live editor: a sweep queues one run
per branch in the editor's queue and ranks them; a value its param refuses is a 422 naming the
param with nothing queued; a sweep can be cancelled; nothing the body holds gets a 5xx."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.sweep import MAX_BRANCHES
from tests.ui.conftest import Server
from tests.ui.server import demo_graph


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("sweep-api") / "workspace")
    yield server
    server.stop()


@pytest.fixture
def api(server):
    graph = demo_graph().model_dump(mode="json")
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "add2"]  # unwired: 'run all' would refuse it
    assert server.api("PUT", "/api/graph", json=graph).status_code == 200
    return server


def wait_sweep(server, sweep_id: int, done, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        sweep = server.api("GET", f"/api/sweeps/{sweep_id}").json()
        if done(sweep):
            return sweep
        assert time.monotonic() < deadline, f"sweep {sweep_id} stayed {sweep['status']}: {sweep['progress']}"
        time.sleep(0.1)


def test_a_sweep_queues_one_run_per_branch_and_ranks_them(api):
    response = api.api("POST", "/api/sweep", json={"grid": {"c1.value": [1, 3], "c2.value": [10, 20]},
                                                    "target": "add"})
    assert response.status_code == 200, response.text
    sweep = response.json()
    assert sweep["total"] == 4 and sweep["target"] == "add"
    assert [b["params"] for b in sweep["branches"]] == [
        {"c1.value": 1, "c2.value": 10}, {"c1.value": 1, "c2.value": 20},
        {"c1.value": 3, "c2.value": 10}, {"c1.value": 3, "c2.value": 20}]
    done = wait_sweep(api, sweep["id"], lambda s: s["status"] not in ("queued", "running"))
    assert done["status"] == "done" and done["progress"] == "4 of 4 branches finished"
    assert done["metric"] == "add.sum" and [b["value"] for b in done["branches"]] == [11.0, 21.0, 13.0, 23.0]
    assert done["best"] == 3 and [b["best"] for b in done["branches"]] == [False, False, False, True]
    assert all(b["seconds"] is not None for b in done["branches"])
    # each branch is a run in the history, tagged with the sweep, with the graph it ran
    runs = {r["id"]: r for r in api.api("GET", "/api/runs").json()}
    for branch in done["branches"]:
        run = runs[branch["run"]]
        assert run["source"] == f"sweep:{sweep['id']}" and run["status"] == "done" and run["target"] == "add"
    # branches share the cache: c1=1 is computed in the first branch and taken from the cache in the second
    assert [runs[b["run"]]["nodes"]["c1"]["status"] for b in done["branches"]] == ["ran", "cached", "ran", "cached"]
    last = api.api("GET", f"/api/runs/{done['branches'][3]['run']}").json()
    values = {n["id"]: n["params"].get("value") for n in last["graph"]["nodes"]}
    assert values["c1"] == 3 and values["c2"] == 20
    # the open document is left as it was
    graph = api.api("GET", "/api/graph").json()
    assert next(n for n in graph["nodes"] if n["id"] == "c1")["params"] == {"value": 2}
    with_curves = api.api("GET", f"/api/sweeps/{sweep['id']}?curves=true").json()
    assert all("curves" in b for b in with_curves["branches"])
    # a branch's time is its own: what its nodes that ran took, so the same sweep again, all cached,
    # shows 0 for each branch (not the job's time, which every branch's run spans)
    again = api.api("POST", "/api/sweep", json={"grid": {"c1.value": [1, 3], "c2.value": [10, 20]},
                                                 "target": "add"}).json()
    cached = wait_sweep(api, again["id"], lambda s: s["status"] not in ("queued", "running"))
    assert [b["seconds"] for b in cached["branches"]] == [0.0] * 4
    assert all(runs[b["run"]]["seconds"] is not None for b in done["branches"])


@pytest.mark.parametrize("grid, param, words", [
    ({"c1.value": [1, 2e7]}, "c1.value", "c1.value: value 20000000.0: c1.value: Input should be less than or equal"),
    ({"c1.value": [1, "x"]}, "c1.value", 'c1.value: value "x"'),
    ({"slow.steps": [0]}, "slow.steps", "slow.steps: value 0"),
    ({"c1.nope": [1]}, "c1.nope", "c1.nope: value 1: c1.nope: unknown parameter"),
    ({"nope.value": [1]}, "nope.value", "nope.value: no node 'nope'"),
    ({"c1.value": []}, "c1.value", "c1.value: give a non-empty list of values"),
    ({"value": [1]}, "value", "grid: 'value' is not NODE.PARAM"),
    ({"c1.value": list(range(MAX_BRANCHES + 1))}, "c1.value", f"is more than the {MAX_BRANCHES} one sweep may have"),
    ({"c1.value": list(range(9)), "c2.value": list(range(8))}, "c2.value", "9 × 8 = 72 branches"),
    ({"c1.value": [float("nan")]}, "c1.value", "c1.value: value nan"),
    ({"c1.value": [1, 2, 1]}, "c1.value", "c1.value: 1 is given twice"),
], ids=["above-max", "not-a-number", "below-min", "unknown-param", "unknown-node", "empty", "no-dot", "too-many",
        "grid-too-big", "nan", "repeated"])
def test_a_bad_value_is_a_422_naming_the_param_and_nothing_is_queued(api, grid, param, words):
    before = len(api.api("GET", "/api/runs").json())
    body = json.dumps({"grid": grid, "target": "add"})  # NaN as JavaScript would send it, which httpx refuses
    response = api.api("POST", "/api/sweep", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["param"] == param and words in detail["message"], detail
    assert len(api.api("GET", "/api/runs").json()) == before


def test_malformed_bodies_and_unknown_sweeps_are_4xx(api):
    for body in ({"grid": 3}, {"grid": {"c1.value": 1}}, {}, {"grid": {}}, {"grid": {"c1.value": [1]}, "extra": 1},
                 {"grid": {"c1.value": [1]}, "target": "nope"}, [1, 2]):
        response = api.api("POST", "/api/sweep", json=body)
        assert response.status_code == 422, (body, response.text)
    assert "target: no node 'nope'" in api.api("POST", "/api/sweep", json={
        "grid": {"c1.value": [1]}, "target": "nope"}).json()["detail"]["message"]
    for sweep_id in ("999", "abc", "9" * 40, "-1", "1.5"):
        assert api.api("GET", f"/api/sweeps/{sweep_id}").status_code == 404
        assert api.api("POST", f"/api/sweeps/{sweep_id}/cancel").status_code == 404
    # a sweep whose branch's run is gone from the history (its row deleted by hand)
    from nodeflow.runs import RunStore

    orphan = RunStore(api.workspace).create_sweep([("c1.value", [1])], None, "g", [({"c1.value": 1}, 99999)])
    for method, path in (("GET", f"/api/sweeps/{orphan}"), ("POST", f"/api/sweeps/{orphan}/cancel")):
        response = api.api(method, path)
        assert response.status_code == 404 and "99999" in response.text, response.text


def test_the_metric_to_judge_at_is_recorded_and_a_bad_one_refused_naming_it(api):
    response = api.api("POST", "/api/sweep", json={"grid": {"c1.value": [1, 3]}, "target": "add", "metric": "add.sum"})
    assert response.status_code == 200, response.text
    done = wait_sweep(api, response.json()["id"], lambda s: s["status"] not in ("queued", "running"))
    assert done["metric"] == "add.sum" and done["warning"] is None and done["best"] == 1
    assert done["judgement"] == "branch 2 is best by value, untested: add.sum has no per-image record"
    for metric, words in (("nope.sum", "metric: no node 'nope'"), ("sum", "metric: 'sum' is not NODE.METRIC, e.g. train.val_accuracy")):
        refused = api.api("POST", "/api/sweep", json={"grid": {"c1.value": [1]}, "metric": metric})
        assert refused.status_code == 422 and refused.json()["detail"] == {"message": words, "param": "metric"}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.none(), st.text(max_size=60), st.integers(), st.floats(), st.lists(st.text(max_size=5), max_size=2),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)))
def test_any_metric_is_taken_or_refused_and_a_refusal_queues_nothing(api, metric):
    before = len(api.api("GET", "/api/runs").json())
    body = json.dumps({"grid": {"c1.value": [1]}, "target": "add", "metric": metric})
    response = api.api("POST", "/api/sweep", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 422), (metric, response.status_code, response.text)
    after = len(api.api("GET", "/api/runs").json())
    if response.status_code == 422:
        assert after == before
    else:
        # a metric asked for is kept; without one, the main metric is known once a branch has finished
        assert after == before + 1 and response.json()["metric"] in ((metric,) if metric else (None, "add.sum"))


def test_a_sweep_is_cancelled_as_a_whole(api):
    response = api.api("POST", "/api/sweep", json={"grid": {"slow.steps": [99_998, 99_999, 100_000]},
                                                    "target": "slow"})
    assert response.status_code == 200, response.text
    sweep_id = response.json()["id"]
    running = wait_sweep(api, sweep_id, lambda s: s["status"] == "running")
    assert running["progress"] == "branch 1 of 3"
    # a sweep is one run over its branches: they start together (at once on a cluster)
    assert [b["status"] for b in running["branches"]] == ["running", "running", "running"]
    assert [b["position"] for b in running["branches"]][1:] == [None, None]
    api.api("POST", f"/api/sweeps/{sweep_id}/cancel")
    ended = wait_sweep(api, sweep_id, lambda s: s["status"] not in ("queued", "running"), timeout=30)
    assert ended["status"] == "cancelled" and [b["status"] for b in ended["branches"]] == ["cancelled"] * 3
    assert ended["best"] is None and ended["progress"] == "3 of 3 branches finished"
    assert not api.api("GET", "/api/status").json()["running"]


def test_a_sweep_cannot_point_a_path_param_outside_the_allowed_folders(registry, workspace, tmp_path):
    """The API takes any param, path params too: every branch is confined as an edit would be."""
    from nodeflow.session import Session
    from nodeflow.sweep import GridError
    from tests.core.conftest import make_graph

    inside = workspace / "data"
    inside.mkdir()
    session = Session(registry, workspace, graph=make_graph({"r": ("test.read_folder", {"root": str(inside)})}, []),
                      allowed_roots=[])
    try:
        with pytest.raises(GridError) as caught:
            session.sweeps.submit([("r.root", [str(inside), str(tmp_path.parent)])], "r")
        assert caught.value.name == "r.root" and "r.root" in str(caught.value)
        # named as the param at fault when another param is swept beside it, and a NUL byte too
        for values in ([str(tmp_path.parent)], [str(inside) + "\0x"]):
            with pytest.raises(GridError) as caught:
                session.sweeps.submit([("r.weights", ["none"]), ("r.root", values)], "r")
            assert caught.value.name == "r.root", caught.value
        assert "NUL" in str(caught.value)
        with pytest.raises(GridError) as caught:
            session.sweeps.submit([("r.root", [str(inside)])], "nope")
        assert caught.value.name == "target"
        assert session.runs.list() == []
    finally:
        session.close()
