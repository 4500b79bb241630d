"""The Runs panel in headless Chromium: two runs listed with what changed, overlaid in one chart
with their diff, a run's graph restored as one undo step, and a node's lineage in its output."""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import shot


#: the tests hold whatever other modules ran on the process's shared test-pack editor (conftest's pack_server)
SHARES_PACK_SERVER = True


async def test_a_second_run_from_the_editor_is_queued_and_listed_with_its_position(editor):
    """Simulated user (no browser): Run all while a run goes queues the second run."""
    user, session, _ = editor
    session.document.edit("set_params", id="slow", params={"steps": 1000, "delay": 0.01})
    session.document.edit("remove_node", id="add2")  # unwired in the demo graph: 'Run all' would refuse it
    await user.open("/")
    user.find("Run all").click()
    for _ in range(100):  # the click's handler runs on the event loop
        if session.queue.running:
            break
        await asyncio.sleep(0.05)
    assert session.queue.running and session.runs.get(1)["status"] == "running"
    user.find("Run all").click()
    await user.should_see("Run 2 queued (#1)")
    assert session.runs.get(2)["status"] == "queued"
    user.find("Runs").click()
    from nicegui import ui

    table = next(iter(user.find(ui.table).elements))
    assert [(r["id"], r["status"], r["source"]) for r in table.rows] == [(2, "queued #1", "editor"),
                                                                         (1, "running", "editor")]
    assert session.queue.cancel(2) == "cancelled"
    session.queue.stop()
    session.queue.wait(10)
    assert [r["status"] for r in session.runs.list()] == ["cancelled", "stopped"]


def run_and_wait(server, steps: int) -> int:
    graph = server.api("GET", "/api/graph").json()
    next(n for n in graph["nodes"] if n["id"] == "slow")["params"] = {"steps": steps, "delay": 0.01}
    assert server.api("PUT", "/api/graph", json=graph).status_code == 200
    run_id = server.api("POST", "/api/run", json={"target": "desc"}).json()["id"]
    deadline = time.monotonic() + 30
    while server.api("GET", f"/api/runs/{run_id}").json()["status"] != "done":
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.1)
    return run_id


@pytest.mark.browser
def test_runs_panel_overlays_two_runs_shows_their_diff_and_restores_one(page, pack_server):
    first = run_and_wait(pack_server, 6)
    second = run_and_wait(pack_server, 9)

    page.get_by_role("button", name="Runs").click()
    table = page.locator(".nf-runs-table")
    table.wait_for()
    rows = table.locator("tbody tr")
    newest, older = rows.nth(0), rows.nth(1)  # newest first
    cells = [c.strip() for c in newest.locator("td").all_inner_texts()]
    assert cells[1] == str(second) and cells[3] == "desc"  # run id, target
    assert cells[4] == "slow.steps=9" and cells[-1] == "done"  # what changed since the run before, status
    assert cells[5].startswith("slow.step_loss=0.1111") and cells[6].endswith("s")  # key metric, duration
    assert cells[7] == "api"  # where it was started
    assert older.locator("td").nth(1).inner_text().strip() == str(first)

    newest.locator(".q-checkbox").click()
    older.locator(".q-checkbox").click()
    page.get_by_role("button", name="Compare").click()
    chart = page.locator(".nf-runs-chart svg")
    chart.wait_for()
    # one line per run, named in the legend, over the curve a person picks (step_loss here)
    assert chart.locator("text", has_text=f"run {first}").count() >= 1
    assert chart.locator("text", has_text=f"run {second}").count() >= 1
    assert chart.locator("text", has_text="slow.step_loss").count() == 1
    assert page.locator(".nf-runs-curve").inner_text().find("slow.step_loss") >= 0
    diff = page.locator(".nf-runs-diff")
    assert "slow.steps: 6 → 9" in diff.inner_text()
    assert "slow.step_loss: 0.1667 → 0.1111 (-0.05556)" in diff.inner_text()
    shot(page, "runs-panel-compare")

    # restore the first run's graph, then one undo brings back the one before
    newest.locator(".q-checkbox").click()
    page.get_by_role("button", name="Restore graph").click()
    page.get_by_role("button", name="Close runs").click()
    summary = page.locator('.vue-flow__node[data-id="slow"] .nf-summary')
    page.wait_for_function("() => document.querySelector('.vue-flow__node[data-id=slow] .nf-summary')"
                           ".innerText.startsWith('steps=6')", timeout=5000)
    page.get_by_role("button", name="Undo").click()
    page.wait_for_function("() => document.querySelector('.vue-flow__node[data-id=slow] .nf-summary')"
                           ".innerText.startsWith('steps=9')", timeout=5000)
    assert summary.inner_text().startswith("steps=9")

    # the node's output shows where its result came from
    page.locator('.vue-flow__node[data-id="slow"] .nf-title').click()
    page.get_by_role("tab", name="Output").click()
    chain = page.locator(".nf-lineage-chain")
    chain.wait_for(timeout=5000)
    assert chain.inner_text() == "add → slow"
    assert f"run {second}" in page.locator(".nf-lineage").inner_text()
