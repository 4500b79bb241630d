"""A page on another origin (another loopback port: the same site, so cookies go along), open in
the same browser as the editor, tries to start a run and to open the editor's websocket: both are refused. The same calls from the
editor's own page work, so the refusal is the origin check and nothing else."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from tests.ui.conftest import Server, browser, free_port  # noqa: F401  (fixture)
from tests.ui.server import demo_graph


ATTACK = """<!doctype html><title>elsewhere</title><body>
<form id=f method=POST action="{editor}/api/run" enctype="text/plain" target=sink>
  <input name='{{"target": "desc", "x": "' value='"}}'></form>
<iframe name=sink></iframe>
<script>
window.results = {{}};
fetch("{editor}/api/run", {{method: "POST", mode: "no-cors", credentials: "include",
                           headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{target: "desc"}})}})
  .then(() => results.fetch = "sent", () => results.fetch = "failed");
fetch("{editor}/api/run", {{method: "POST", mode: "no-cors", credentials: "include"}})  // no body: run all
  .then(() => results.bare = "sent", () => results.bare = "failed");
fetch("{editor}/api/edit", {{method: "POST", credentials: "include", headers: {{"Content-Type": "application/json"}},
                            body: JSON.stringify({{ops: [{{op: "remove_node", id: "desc"}}]}})}})
  .then(r => results.edit = r.status, () => results.edit = "failed");
const ws = new WebSocket("{socket}");
ws.onopen = () => results.ws = "open";
ws.onerror = () => results.ws = "error";
ws.onclose = () => results.closed = true;
document.getElementById("f").submit();
</script></body>"""


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("xsite") / "workspace")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def elsewhere(editor):
    """The attacker's page, served from a second loopback port (another origin, the same site)."""
    socket_url = f"ws://127.0.0.1:{editor.port}/_nicegui_ws/socket.io/?EIO=4&transport=websocket"
    page = ATTACK.format(editor=editor.url, socket=socket_url).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", socket_url
    httpd.shutdown()


def node_states(editor) -> dict[str, str]:
    return {k: v["state"] for k, v in editor.api("GET", "/api/status").json()["nodes"].items()}


def test_another_origin_cannot_run_edit_or_open_the_socket(browser, editor, elsewhere):  # noqa: F811
    attack_url, socket_url = elsewhere
    context = browser.new_context()
    tab = context.new_page()
    graph = demo_graph().model_dump(mode="json")
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "add2"]  # valid as a whole: "run all" would run
    assert editor.api("PUT", "/api/graph", json=graph).status_code == 200
    tab.goto(editor.url + "/")  # the user has the editor open in the same browser
    tab.wait_for_selector(".vue-flow__node[data-id=desc]")
    graph_before = editor.api("GET", "/api/graph").json()
    states_before = node_states(editor)

    attacker = context.new_page()
    attacker.goto(attack_url)
    attacker.wait_for_function("window.results && results.fetch && results.bare && results.edit && (results.ws || results.closed)",
                               timeout=15_000)
    results = attacker.evaluate("window.results")
    time.sleep(1.0)  # a run, had one started, would show by now
    status = editor.api("GET", "/api/status").json()
    assert not status["running"] and node_states(editor) == states_before
    assert editor.api("GET", "/api/graph").json() == graph_before
    assert results["edit"] == "failed" or results["edit"] == 403  # CORS hides the 403 from the page
    assert results.get("ws") != "open"

    # the same calls from the editor's own page do work
    own = tab.evaluate("""async (socket) => {
        const r = await fetch("/api/run", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({target: "add"})});
        const opened = await new Promise(done => { const ws = new WebSocket(socket);
            ws.onopen = () => { ws.close(); done("open"); }; ws.onerror = () => done("error"); });
        return {run: r.status, ws: opened};
    }""", socket_url)
    assert own == {"run": 200, "ws": "open"}
    deadline = time.time() + 15
    while editor.api("GET", "/api/status").json()["running"] and time.time() < deadline:
        time.sleep(0.1)
    assert node_states(editor)["add"] == "done"
    context.close()
