"""The cost preview as a person sees it: the estimate on a stale node's card, and a run whose
estimate exceeds the threshold asks first, listing the heavy node; Cancel runs nothing."""

from __future__ import annotations

import pytest

from nodeflow.ui.run_controls import RUN_CONFIRM_SECONDS

pytestmark = pytest.mark.browser

CARD = '.vue-flow__node[data-id="timed"]'


#: the tests hold whatever other modules ran on the process's shared test-pack editor (conftest's pack_server)
SHARES_PACK_SERVER = True


def test_estimate_on_the_card_and_confirmation_over_the_threshold(page, pack_server):
    added = pack_server.api("POST", "/api/edit", json={"ops": [
        {"op": "add_node", "type": "test.timed", "id": "timed", "params": {"steps": 20, "delay": 0.05},
         "position": {"x": 300, "y": 320}},
        {"op": "connect", "source": "add", "source_port": "value", "target": "timed", "target_port": "value"}]})
    assert added.status_code == 200, added.text
    page.wait_for_selector(CARD)
    page.locator(f"{CARD} .nf-title").click()
    page.get_by_role("button", name="Estimate").click()
    page.wait_for_selector(f"{CARD} .nf-estimate", timeout=15_000)
    assert page.locator(f"{CARD} .nf-estimate").inner_text() == "≈ 1.0 s · 20 epochs · CPU"

    # 2000 steps of 0.05 s: 100 s, over the threshold; the old estimate no longer holds, and the new one
    # is profiled in the background (Run never waits for it)
    assert 100 > RUN_CONFIRM_SECONDS
    pack_server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "timed",
                                                        "params": {"steps": 2000, "delay": 0.05}}]})
    page.wait_for_function(f"document.querySelector('{CARD} .nf-estimate')?.innerText.includes('2000 epochs')",
                           timeout=15_000)
    # the card shows the new estimate, and the confirmation says the same
    assert page.locator(f"{CARD} .nf-estimate").inner_text() == "≈ 1.7 min · 2000 epochs · CPU"
    runs_before = len(pack_server.api("GET", "/api/runs").json())
    page.locator(f"{CARD} .nf-run").click()
    dialog = page.locator(".nf-run-confirm")
    dialog.wait_for(timeout=15_000)
    assert "This run takes about 1.7 min" in dialog.inner_text()
    heavy = dialog.locator(".nf-heavy-node")
    assert heavy.count() == 1 and heavy.inner_text().startswith("timed: ≈ 1.7 min · 2000 epochs · CPU")

    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="hidden")
    page.wait_for_timeout(800)  # no event to wait for: a run that Cancel had started would show by now
    status = pack_server.api("GET", "/api/status").json()
    assert not status["running"] and status["nodes"]["timed"]["state"] in ("idle", "stale")
    assert len(pack_server.api("GET", "/api/runs").json()) == runs_before
    assert page.locator(f"{CARD} .nf-badge").get_attribute("data-state") in ("idle", "stale")

    # Run in the dialog starts it (the estimate is reused: no second measuring)
    page.locator(f"{CARD} .nf-run").click()
    dialog = page.locator(".nf-run-confirm")
    dialog.wait_for(timeout=5_000)
    dialog.get_by_role("button", name="Run").click()
    page.wait_for_selector(f'{CARD} .nf-badge[data-state="running"]', timeout=15_000)
    assert len(pack_server.api("GET", "/api/runs").json()) == runs_before + 1
    pack_server.api("POST", "/api/stop")
    page.wait_for_selector(f'{CARD} .nf-badge:not([data-state="running"])', timeout=15_000)
