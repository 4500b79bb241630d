"""The README's pictures of the cats-vs-dogs template opened as its five course parts: the groups as
frames around their cards, then each collapsed into one card with its external ports (clicked in
headless Chromium, as a person collapses them).

    PYTHONPATH=. python scripts/groups_screenshot.py [--out docs/screenshots/template-groups.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodeflow.templates import template_path  # noqa: E402
from tests.ui.conftest import CHROMIUM_ARGS, Server, chromium_path  # noqa: E402

VIEWPORT = {"width": 1440, "height": 900}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots" / "template-groups.png"),
                        help="the expanded view; the collapsed one goes beside it, named ...-collapsed.png")
    args = parser.parse_args()
    out = Path(args.out)
    collapsed_out = out.with_name(f"{out.stem}-collapsed{out.suffix}")
    workspace = ROOT / "test-artifacts" / "groups-demo"
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    server = Server(workspace, "--builtin", "--graph", str(template_path("cats_vs_dogs_finetune")))
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            tab = browser.new_page(viewport=VIEWPORT)
            tab.goto(server.url + "/")
            tab.wait_for_selector(".nf-frame .nf-group-title")
            tab.wait_for_function("() => document.querySelectorAll('.nf-frame').length === 5")
            tab.locator(".vue-flow__controls-fitview").click()
            footer = tab.locator(".nf-footer").bounding_box()  # the log names the workspace: left out
            clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": footer["y"]}
            tab.wait_for_function("() => !document.querySelector('.q-notification')")
            tab.screenshot(path=str(out), clip=clip)
            while tab.locator(".nf-frame .nf-collapse").count():
                count = tab.locator(".nf-group-card").count()
                tab.locator(".nf-frame .nf-collapse").first.click()
                tab.wait_for_function("(n) => document.querySelectorAll('.nf-group-card').length > n", arg=count)
            tab.locator(".vue-flow__controls-fitview").click()
            tab.screenshot(path=str(collapsed_out), clip=clip)
            browser.close()
        print(f"saved {out} and {collapsed_out}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
