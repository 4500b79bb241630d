"""The confusion-cell gallery through the HTTP API of a real server: a cell's page of images with
overlay URLs (drawn once, then from the cache), the PNGs served only from the overlay folder, 404
for what does not exist, and the report tables (the worst errors, the doctor's findings)."""

from __future__ import annotations

import pytest

from tests.ui import gallery_server

CLASSES = ("circle", "stripes")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = gallery_server.start(tmp_path_factory.mktemp("gallery-api"))
    yield server
    server.stop()


def cell(server, true: str, predicted: str, **query):
    return server.api("GET", f"/api/errors/errors/cells/{true}/{predicted}", params=query)


def test_a_cell_page_has_rows_with_overlays_drawn_once(server):
    counts = {(t, p): cell(server, t, p, per_page=1).json()["count"] for t in CLASSES for p in CLASSES}
    assert sum(counts.values()) == 12  # every test image sits in exactly one cell
    (true, predicted), count = max(counts.items(), key=lambda kv: kv[1])
    first = cell(server, true, predicted, per_page=2, page=2)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["node"], body["true"], body["predicted"], body["count"]) == ("errors", true, predicted, count)
    assert body["page"] == 2 and body["pages"] == -(-count // 2) and [r["rank"] for r in body["rows"]][0] == 3
    assert body["drawn"] == len(body["rows"]) and body["from_cache"] == 0
    for row in body["rows"]:
        assert row["true"] == true and row["predicted"] == predicted and 0 < row["confidence"] <= 1
        assert row["loss"] >= 0 and row["overlay_url"].startswith("/api/errors/errors/overlays/")
        png = server.api("GET", row["overlay_url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content[:4] == b"\x89PNG"
    again = cell(server, true, predicted, per_page=2, page=2).json()
    assert (again["drawn"], again["from_cache"]) == (0, len(body["rows"]))
    assert [r["overlay_url"] for r in again["rows"]] == [r["overlay_url"] for r in body["rows"]]


def test_unknown_node_class_page_and_nodes_without_galleries_answer_404(server):
    assert cell(server, "circle", "circle", page=99).status_code == 404
    for path in ("/api/errors/nope/cells/circle/circle", "/api/errors/errors/cells/zebra/circle",
                 "/api/errors/eval/cells/circle/circle", "/api/errors/train/cells/circle/circle",
                 "/api/tables/nope"):
        answer = server.api("GET", path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["detail"]
    assert "Error analysis" in server.api("GET", "/api/errors/eval/cells/circle/circle").json()["detail"]
    for query in ({"page": 0}, {"per_page": 0}, {"per_page": 10_000}, {"page": "x"}):
        assert cell(server, "circle", "circle", **query).status_code == 422


def test_overlays_are_served_only_from_the_overlay_folder(server):
    folder = server.workspace / "overlays"
    drawn = sorted(folder.glob("*.png"))
    assert drawn  # the test above drew some
    secret = server.workspace.parent / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    link = folder / ("0" * 64 + ".png")
    link.symlink_to(secret)
    try:
        for name in ("0" * 64 + ".png", "..%2Fgraph.json", "..%2F..%2Fsecret.png", "f" * 64 + ".png",
                     drawn[0].name.upper(), drawn[0].stem):
            answer = server.api("GET", f"/api/errors/errors/overlays/{name}")
            assert answer.status_code == 404, name
            assert b"secret" not in answer.content
        assert server.api("GET", f"/api/errors/nope/overlays/{drawn[0].name}").status_code == 404
        assert server.api("GET", f"/api/errors/errors/overlays/{drawn[0].name}").status_code == 200
    finally:
        link.unlink()


def test_report_tables_carry_the_worst_errors_and_the_doctors_findings(server):
    errors = server.api("GET", "/api/tables/errors").json()["tables"]
    rows = errors["top_errors"]["rows"]
    assert rows and all(r["true"] != r["predicted"] for r in rows)
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    doctor = server.api("GET", "/api/tables/doctor").json()["tables"]
    balance = {r["class"]: r for r in doctor["class_balance"]["rows"]}
    assert set(balance) == set(CLASSES) and all(r["test"] == 6 for r in balance.values())
    assert {"unreadable", "tiny", "extreme_aspect", "exact_duplicates"} <= set(doctor)


def test_a_gallery_of_a_node_not_run_with_its_current_params_is_404(server):
    assert server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "errors",
                                                          "params": {"top_n": 3}}]}).status_code == 200
    answer = cell(server, "circle", "circle")
    assert answer.status_code == 404 and "run it first" in answer.json()["detail"]
    assert server.api("GET", "/api/tables/errors").status_code == 404
