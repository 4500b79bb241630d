"""Files are checked when they are read, not only when their folder was set: an image replaced,
after the error analysis ran, by a link to a file outside the allowed folders with the same size
and time is neither drawn nor served from the overlay cache, and a node that reads it is refused;
an overlay is served only for the bytes it was drawn from. (A file's fingerprint holds its ctime,
which a restored size and mtime cannot put back: the dataset's result is then not the one on
disk, and the gallery says to run the analysis again rather than show what it found before.)"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from nodeflow.session import Session
from tests.imagegen import make_image_set
from tests.nodes.graphs import error_analysis_graph

SIZE = 32


@pytest.fixture(scope="module")
def layout(registry, tmp_path_factory):
    pytest.importorskip("captum")
    base = tmp_path_factory.mktemp("confined")
    root = make_image_set(base / "images", ("circle", "stripes"), per_class=30, size=SIZE, fmt="png", seed=3)
    outside = base / "secret"
    outside.mkdir()
    session = Session(registry, base / "ws", graph=error_analysis_graph(root, size=SIZE), device="cpu",
                      allowed_roots=[root])
    session.queue.run()
    report = session.queue.wait(300)
    assert report is not None and report.ok, report and report.to_json()
    yield session, outside, root
    session.close()


def a_cell(session) -> tuple[str, str]:
    """The fullest confusion cell of the analysis as the files stand now (an earlier test that swapped
    a file and put it back changed its ctime: the analysis runs again first)."""
    session.queue.run()
    assert session.queue.wait(300).ok
    tables = session.executor.cache.get(session.executor.keys(session.document.graph)["errors"],
                                        session.registry.get("eval.errors"))[0]["errors"].tables
    cell = max(tables["confusion_cells"], key=lambda c: c["count"])
    return cell["true"], cell["predicted"]


def look_alike(original: Path, colour: tuple[int, int, int]) -> bytes:
    """Other pixels in a PNG of the original's byte size (padded after its end, which decoders skip)."""
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), colour).save(buffer, format="PNG")
    data = buffer.getvalue()
    size = original.stat().st_size
    assert len(data) <= size
    return data + b"\0" * (size - len(data))


def same_stamp(path: Path, like: os.stat_result) -> None:
    os.utime(path, ns=(like.st_atime_ns, like.st_mtime_ns), follow_symlinks=True)


@contextlib.contextmanager
def swapped_for_a_link(victim: Path, target: Path, keep: Path):
    """``victim`` replaced by a link to ``target`` (the original kept in ``keep``, outside its folder,
    so the folder lists the same names), and put back afterwards."""
    kept = keep / f"kept-{victim.name}"
    victim.rename(kept)
    victim.symlink_to(target)
    try:
        yield
    finally:
        victim.unlink()
        kept.rename(victim)


def test_a_gallery_image_swapped_for_a_link_outside_is_not_drawn_nor_served(layout):
    session, outside, _ = layout
    true, predicted = a_cell(session)
    first = session.results.cell_gallery("errors", true, predicted, per_page=2)
    assert first["drawn"] == 2
    victim = Path(first["rows"][0]["file"])
    before = victim.stat()
    secret = outside / "secret.png"
    secret.write_bytes(look_alike(victim, (200, 0, 0)))
    same_stamp(secret, before)
    drawn = sorted(session.results.overlay_folder.glob("*.png"))
    with swapped_for_a_link(victim, secret, outside):
        assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        with pytest.raises((RuntimeError, LookupError),
                           match="links to outside the folders this editor may use|run it first"):
            session.results.cell_gallery("errors", true, predicted, per_page=2)
        assert sorted(session.results.overlay_folder.glob("*.png")) == drawn  # nothing drawn from the link


def test_an_image_rewritten_with_the_same_size_and_time_is_drawn_again(layout):
    session, _, _ = layout
    true, predicted = a_cell(session)
    first = session.results.cell_gallery("errors", true, predicted, page=1, per_page=1)
    victim = Path(first["rows"][0]["file"])
    before, original = victim.stat(), victim.read_bytes()
    try:
        victim.write_bytes(look_alike(victim, (0, 0, 200)))
        same_stamp(victim, before)
        try:
            again = session.results.cell_gallery("errors", true, predicted, page=1, per_page=1)
        except LookupError as exc:  # the data's fingerprint (its ctime) already says so: run it first
            assert "run it first" in str(exc)
        else:
            assert (again["drawn"], again["from_cache"]) == (1, 0)  # drawn from the bytes the file holds now
            assert again["rows"][0]["overlay"] != first["rows"][0]["overlay"]
    finally:
        victim.write_bytes(original)
        same_stamp(victim, before)


def test_a_node_reading_a_dataset_image_swapped_for_a_link_outside_is_refused(layout):
    session, outside, root = layout
    victim = sorted(p for p in root.rglob("*.png") if p.is_file())[0]
    before = victim.stat()
    secret = outside / "read.png"
    secret.write_bytes(look_alike(victim, (0, 200, 0)))
    same_stamp(secret, before)
    with swapped_for_a_link(victim, secret, outside):
        session.document.edit("set_params", id="errors", params={"top_n": 7})  # the analysis runs again
        session.queue.run(target="errors")
        report = session.queue.wait(300)
        failed = [n for n, r in report.nodes.items() if r.status == "failed"]
        assert failed and all("links to outside the folders this editor may use" in report.nodes[n].error
                              for n in failed), report.to_json()
        assert report.nodes["errors"].status != "ran"
