"""Uploads through the HTTP endpoint of a project on the shared server, attacked: a zip with a path
that leaves the folder, a link inside a zip, a zip bomb, a 0-byte image and a file that is not an
image are each refused with the reason, and nothing is written anywhere (neither outside the project
nor, half-done, inside it). Limits and the disk quota are named when hit. In process (ASGI)."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest
import pytest_asyncio

from nodeflow.uploads import UploadLimits
from tests.reliability.classroom_site import classroom_site, image_bytes, image_zip, tree


def zip_of(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def link_entry() -> zipfile.ZipInfo:
    link = zipfile.ZipInfo("cats/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return link


REFUSED = [
    ("zip-slip", "x.zip", zip_of([("cats/1.png", image_bytes()), ("../../outside.png", image_bytes())]),
     "'../../outside.png': a path with '..' leaves the upload folder (zip-slip)"),
    ("absolute path", "x.zip", zip_of([("/etc/cron.d/evil.png", image_bytes())]),
     "an absolute path leaves the upload folder (zip-slip)"),
    ("link in a zip", "x.zip", zip_of([("cats/1.png", image_bytes()), (link_entry(), b"/etc/passwd")]),
     "'cats/link.png': a link inside the zip (links could point anywhere)"),
    ("zip bomb", "x.zip", zip_of([("cats/bomb.png", b"\0" * (32 * 2**20))]),
     "'cats/bomb.png': it expands more than max_ratio = 200 times its compressed size (a zip bomb?)"),
    ("0-byte image", "cats/empty.png", b"", "'cats/empty.png': an empty file (0 bytes) is not an image"),
    ("not an image", "cats/notes.png", b"%PDF-1.4 a document, not a picture",
     "'cats/notes.png': not a readable image (UnidentifiedImageError: cannot identify image file)"),
    ("another suffix", "cats/run.sh", b"#!/bin/sh\nrm -rf ~\n", "'cats/run.sh': not an image file"),
]


#: one server for the module (a site's start costs about a second; two at once would share NiceGUI's
#: one app); each test has a new project of alice's on it (room for all of them open at once: the
#: open-projects limit is test_classroom_isolation's) and compares the whole server folder with how it
#: was just before
OPEN = 32
SMALL = UploadLimits(max_files=5, max_total_bytes=3 * 2**20, max_pixels=100_000)
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_site(tmp_path_factory):
    async with classroom_site(tmp_path_factory.mktemp("uploads") / "root", max_open_projects=OPEN) as found:
        yield found


async def new_project(found):
    alice = found.client("alice")
    made = await alice.post("/api/projects", json={"title": "uploads"})
    assert made.status_code == 200, made.text
    found.project = made.json()["id"]
    found.server.quota.forget("alice")  # her disk use measured afresh, as on a server of the test's own
    assert (await alice.get(f"/api/p/{found.project}/status")).status_code == 200  # the project is open
    return found


@pytest_asyncio.fixture(loop_scope="module")
async def site(shared_site):
    """A new project of alice's on a server with the usual upload limits."""
    assert shared_site.server.upload_limits == UploadLimits()
    return await new_project(shared_site)


@pytest_asyncio.fixture(loop_scope="module")
async def limited(shared_site):
    """The same with small limits, to hit each (the server's setting, for the projects opened meanwhile)."""
    usual = shared_site.server.upload_limits
    shared_site.server.upload_limits = SMALL
    try:
        yield await new_project(shared_site)
    finally:
        shared_site.server.upload_limits = usual


def everything(site):
    """Every file of the server's folder (all users, all projects)."""
    return tree(site.server.root)


async def upload(site, files, name="pets", who="alice", **kw):
    return await site.client(who).post(f"/api/p/{site.project}/uploads", params={"name": name, **kw},
                                       files=[("files", f) for f in files])


@pytest.mark.parametrize("what,filename,data,reason", REFUSED, ids=[r[0] for r in REFUSED])
async def test_a_hostile_upload_is_refused_with_the_reason_and_nothing_is_written(site, what, filename, data,
                                                                                   reason):
    before = everything(site)
    files = [(filename, data, "application/octet-stream")]
    if not filename.endswith(".zip"):
        files.insert(0, ("cats/fine.png", image_bytes(), "image/png"))  # a good file before the bad one
    response = await upload(site, files)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert reason in detail["message"] and detail["message"].endswith("; nothing was saved")
    assert str(site.server.root.parent) not in response.text  # no path of the server's in what is shown
    assert everything(site) == before  # nothing outside the project, nothing half-done inside it


async def test_a_zip_and_dropped_folders_land_in_the_data_folder_with_their_classes(site):
    response = await upload(site, [("pets.zip", image_zip(per_class=2), "application/zip")])
    assert response.status_code == 200, response.text
    assert response.json() | {"bytes": 0} == {"folder": "pets", "path": "data/pets", "images": 4, "bytes": 0,
                                              "classes": {"cat": 2, "dog": 2}, "loose": 0, "skipped": []}
    dropped = [("shapes/circle/1.png", image_bytes(seed=1), "image/png"),
               ("shapes/circle/2.png", image_bytes(seed=2), "image/png"),
               ("shapes/.DS_Store", b"junk", "application/octet-stream")]
    again = await upload(site, dropped, name="pets", rename="true")  # the name is taken: a free one
    assert again.json()["folder"] == "pets-2" and again.json()["classes"] == {"circle": 2}
    assert again.json()["skipped"] == ["shapes/.DS_Store"]
    taken = await upload(site, dropped, name="pets")
    assert taken.status_code == 409 and "already has 'pets'" in taken.json()["detail"]["message"]
    listed = (await site.client("alice").get(f"/api/p/{site.project}/data")).json()
    assert [(d["name"], d["images"]) for d in listed] == [("pets", 4), ("pets-2", 2)]
    folder = site.server.projects.get(site.users["alice"], site.project).path / "data" / "pets-2"
    assert (folder / "circle" / "1.png").read_bytes() == image_bytes(seed=1)  # the one wrapping folder unwrapped


@pytest.mark.parametrize("files,status,limit,says", [
    ([(f"c/{i}.png", image_bytes(seed=i), "image/png") for i in range(6)], 413, "max_files",
     "more than max_files = 5 files"),
    ([("c/big.png", image_bytes(size=400), "image/png")], 422, "max_pixels",
     "400×400 = 160,000 pixels, more than max_pixels = 100,000"),
    ([("c/huge.bmp", b"BM" + b"\0" * (3 * 2**20 + 10), "image/bmp")], 413, "max_total_bytes",
     "larger than max_total_bytes = 3.0 MiB"),
])
async def test_each_limit_is_named_when_hit(limited, files, status, limit, says):
    before = everything(limited)
    response = await upload(limited, files)
    assert response.status_code == status, response.text
    assert response.json()["detail"].get("limit") == limit and says in response.json()["detail"]["message"]
    assert everything(limited) == before


async def test_a_full_disk_quota_refuses_uploads_and_keeps_what_is_stored(site):
    assert (await upload(site, [("pets.zip", image_zip(per_class=1), "application/zip")])).status_code == 200
    unlimited = site.server.quota.limit
    site.server.quota.limit = 1  # what alice has is over it now
    try:
        before = everything(site)
        response = await upload(site, [("more.zip", image_zip(per_class=1), "application/zip")], name="more")
        assert response.status_code == 507 and "disk quota is full" in response.json()["detail"]["message"]
        run = await site.client("alice").post(f"/api/p/{site.project}/run", json={})
        assert run.status_code == 507 and "disk quota is full" in run.json()["detail"]
        assert everything(site) == before  # nothing stored was removed either
    finally:
        site.server.quota.limit = unlimited  # the next test's uploads fit again


async def test_an_upload_from_another_site_or_not_multipart_is_refused(site):
    before = everything(site)
    cross = await site.client("alice").post(f"/api/p/{site.project}/uploads", params={"name": "x"},
                                            files=[("files", ("a.png", image_bytes(), "image/png"))],
                                            headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "cross-site" in cross.text
    raw = await site.client("alice").post(f"/api/p/{site.project}/uploads", params={"name": "x"},
                                          content=image_zip(), headers={"Content-Type": "application/zip"})
    assert raw.status_code == 415 and "multipart/form-data" in raw.text
    nothing = await site.client("alice").post(f"/api/p/{site.project}/uploads", params={"name": "x"},
                                              data={"note": "no files"}, files=[])
    assert nothing.status_code in (415, 422)
    bad_name = await upload(site, [("a.png", image_bytes(), "image/png")], name="../../escape")
    assert bad_name.status_code == 422 and "is not allowed" in bad_name.text
    assert everything(site) == before


async def test_removing_an_upload_frees_its_room(site):
    alice = site.client("alice")
    assert (await upload(site, [("pets.zip", image_zip(per_class=1), "application/zip")])).status_code == 200
    used = (await alice.get("/api/me")).json()["disk"]["used"]
    assert (await alice.delete(f"/api/p/{site.project}/data/pets")).json() == {"removed": "data/pets"}
    assert (await alice.get("/api/me")).json()["disk"]["used"] < used
    assert (await alice.delete(f"/api/p/{site.project}/data/pets")).status_code == 404
    assert (await alice.delete(f"/api/p/{site.project}/data/..")).status_code == 404
