"""The README's picture of a confusion cell's gallery: trains a ResNet-18 from scratch on pictures
where one class carries a square in a fixed place (tests/imagegen.py), with four marked test
pictures filed under 'plain' (wrong labels), runs the error analysis in the editor, clicks the
fullest misclassified cell of its confusion matrix in headless Chromium and saves the page with the
gallery open: the network called them 'marked', and Grad-CAM shows it looked at the square.

    PYTHONPATH=. python scripts/gallery_screenshot.py [--out docs/screenshots/confusion-gallery.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.imagegen import make_patch_set  # noqa: E402
from tests.ui import gallery_server  # noqa: E402
from tests.ui.conftest import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.ui.test_browser_gallery import IMAGES_LOADED, click_cell, open_output, settled_cells  # noqa: E402

SIZE = 96
PATCH = (24, 24, 56, 56)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots" / "confusion-gallery.png"))
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    # under the repository, named relatively: the canvas shows the image folder as the user typed it
    base = Path("test-artifacts") / "gallery-demo"
    shutil.rmtree(ROOT / base, ignore_errors=True)
    (ROOT / base).mkdir(parents=True)
    images = make_patch_set(ROOT / base / "images", per_class=60, size=SIZE, patch=PATCH, seed=1)
    for i, path in enumerate(sorted((images / "test" / "marked").glob("*.png"))[:4]):
        path.rename(images / "test" / "plain" / f"mislabelled.{i}.png")
    server = gallery_server.start(ROOT / base, epochs=args.epochs, root=base / "images", size=SIZE,
                                   lr=1e-3)
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            tab = browser.new_page(viewport={"width": 1440, "height": 900})
            tab.goto(server.url + "/")
            tab.wait_for_selector(".vue-flow__node[data-id=errors]")
            open_output(tab, "errors")
            found = settled_cells(tab)
            classes = found["classes"]
            chosen = max(found["cells"], key=lambda c: (c["true"] != c["predicted"] and c["count"] >= 2, c["count"]))
            click_cell(tab, classes[chosen["true"]], classes[chosen["predicted"]])
            tab.wait_for_selector(".nf-gallery .nf-gallery-item", timeout=300_000)
            tab.wait_for_function(IMAGES_LOADED, timeout=60_000)
            tab.wait_for_timeout(500)
            # down to the end of the error table, above the log (which names the workspace)
            footer = tab.locator(".nf-footer").bounding_box()
            table = tab.locator(".nf-output .nf-class-metrics").bounding_box()
            grid = tab.locator(".nf-gallery-grid").bounding_box()
            bottom = min(footer["y"], max(table["y"] + table["height"], grid["y"] + grid["height"]) + 16)
            tab.screenshot(path=args.out, clip={"x": 0, "y": 0, "width": 1440, "height": bottom})
            browser.close()
        print(f"saved {args.out}: cell {classes[chosen['true']]} -> {classes[chosen['predicted']]}, "
              f"{chosen['count']} images")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
