"""GET /api/estimate: the cost preview over HTTP, on the editor's own session; 404 names an unknown
target, 422 lists the problems of an invalid graph; nothing runs."""

from __future__ import annotations

import httpx


async def test_estimate_endpoint_answers_costs_and_refuses_bad_requests(editor):
    user, session, _ = editor
    session.document.edits([{"op": "add_node", "type": "test.timed", "id": "timed", "params": {"steps": 20, "delay": 0.05}},
                   {"op": "connect", "source": "add", "source_port": "value", "target": "timed", "target_port": "value"}])
    await user.open("/")
    from nicegui import app

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        found = await http.get("/api/estimate", params={"target": "timed"})
        assert found.status_code == 200, found.text
        body = found.json()
        assert body["target"] == "timed" and body["complete"]
        timed = body["nodes"]["timed"]  # 20 steps of 0.05 s, as the test pack's timed node says
        assert timed["status"] == "stale" and timed["seconds"] == 1.0 and timed["epochs"] == 20
        assert body["total_seconds"] >= 1.0
        assert set(body["nodes"]) == {"c1", "c2", "add", "timed"}
        assert not session.queue.running and session.runs.list() == []  # nothing was run or recorded
        assert session.estimator.prices()["timed"]["seconds"] == 1.0

        missing = await http.get("/api/estimate", params={"target": "nope"})
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        # the whole demo graph has 'add2' with its input unconnected
        invalid = await http.get("/api/estimate")
        assert invalid.status_code == 422
        problems = invalid.json()["detail"]["problems"]
        assert any(p["node"] == "add2" for p in problems)
