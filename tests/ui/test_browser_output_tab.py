"""Runs do not mix on the Output tab: while a node runs again, its previous curves stay, greyed and
labelled, until the new run's replace them; the panel says which run it shows."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

#: the tests hold whatever other modules ran on the process's shared test-pack editor (conftest's pack_server)
SHARES_PACK_SERVER = True


SERIES = """() => {
    const el = document.querySelector('.nf-output .nf-chart');
    const chart = el && getElement(el) && getElement(el).chart;
    if (!chart) return null;
    return chart.getOption().series.map(s => ({name: s.name, color: (s.lineStyle || {}).color || null,
                                               n: s.data.length}));
}"""


def test_rerun_keeps_previous_curves_greyed_and_labelled(page, pack_server):
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    pack_server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "slow",
                                                        "params": {"steps": 20, "delay": 0.02}}]})
    assert pack_server.api("POST", "/api/run", json={"target": "slow"}).status_code == 200
    page.wait_for_selector('.vue-flow__node[data-id="slow"] .nf-badge[data-state="done"]', timeout=30_000)
    page.locator('.vue-flow__node[data-id="slow"] .nf-title').click()
    page.get_by_role("tab", name="Output").click()
    page.wait_for_selector(".nf-output .nf-chart canvas")
    assert "finished" in page.locator(".nf-run-label").inner_text()
    first = page.evaluate(SERIES)
    assert [s["name"] for s in first] == ["step_loss"] and first[0]["n"] == 20

    # run again, slower: the old curve stays on screen, grey and named as the previous run's
    pack_server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "slow",
                                                        "params": {"steps": 40, "delay": 0.1}}]})
    assert pack_server.api("POST", "/api/run", json={"target": "slow"}).status_code == 200
    page.wait_for_selector(".nf-previous-note", timeout=10_000)
    assert "previous run" in page.locator(".nf-previous-note").inner_text()
    assert page.locator(".nf-output .nf-chart canvas").count() >= 1  # the chart did not vanish
    page.wait_for_function(f"() => {{ const s = ({SERIES})(); "
                           f"return s && s.some(x => x.name === 'step_loss' && x.n > 0); }}")
    during = {s["name"]: s for s in page.evaluate(SERIES)}
    assert during["step_loss (previous run)"]["n"] == 20
    assert during["step_loss (previous run)"]["color"] == "#b0b8c4"  # greyed
    assert during["step_loss"]["color"] != "#b0b8c4"
    label = page.locator(".nf-run-label").inner_text()
    assert "running" in label or "Running" in label

    # when it ends, the new curve has replaced the old one
    page.wait_for_selector('.vue-flow__node[data-id="slow"] .nf-badge[data-state="done"]', timeout=30_000)
    page.wait_for_function(f"() => {{ const s = ({SERIES})(); return s && s.length === 1 && s[0].n === 40; }}")
    assert page.locator(".nf-previous-note").count() == 0
    assert console == []  # e.g. no echart "dispose" TypeError from a chart removed before it was drawn
