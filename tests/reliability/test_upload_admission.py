"""Uploads on the shared server, admitted in one place (the owner's disk quota): uploads arriving
together never store more than the quota, the body never lands in the temp folder and its staging
folder never holds more than the quota has left, a client that goes away mid-body leaves nothing
and frees its place, and one person's uploads at once are limited. Real concurrent requests through
the real app (in process, over ASGI) and, for the disconnect, a real server on loopback."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import random
import tempfile
import warnings
import zipfile
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from nodeflow.uploads import STAGING_PREFIX
from nodeflow.users.quota import folder_bytes
from tests.reliability.classroom_site import classroom_site, image_bytes, tree

KIB = 1024
MIB = 1024 * KIB


def noise_png(side: int, seed: int) -> bytes:
    """A PNG of random pixels: it does not compress, so its size is about side² × 3 bytes."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def stored_zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        warnings.simplefilter("ignore")  # a name twice is one of the inputs
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[str, bytes]:
    """The content type and body a browser's form sends with ``files`` in the field 'files'."""
    request = httpx.Request("POST", "http://127.0.0.1/", data=fields or {},
                            files=[("files", (name, data, "application/octet-stream")) for name, data in files])
    return request.headers["content-type"], request.read()


async def until(condition, timeout: float = 30.0, what: str = "") -> None:
    """Wait for ``condition`` to hold (it is about another task's or thread's progress)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"waited {timeout} s for {what or condition}")
        await asyncio.sleep(0.01)


def in_temp_folder(folder: Path) -> int:
    """The bytes the temp folder holds: its files, and the open files this process made there
    (a spooled upload is unlinked as soon as it is made: only its descriptor shows it)."""
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{folder}/") and target.endswith("(deleted)"):
                total += os.stat(f"/proc/self/fd/{fd}").st_size
        except OSError:  # closed meanwhile
            continue
    return total


def staging(data: Path) -> list[Path]:
    return sorted(data.glob(f"{STAGING_PREFIX}*"))


def staged_bytes(data: Path) -> int:
    return sum(folder_bytes(p) for p in staging(data))


@pytest.fixture
async def site(tmp_path, monkeypatch):
    """Alice's and Bob's projects; the process's temp folder is one the test watches."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("the open files of a process are read from /proc")
    watched = tmp_path / "tmp"
    watched.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    async with classroom_site(tmp_path / "root") as found:
        found.tmp = watched
        found.projects = {}
        found.data = {}
        for who in ("alice", "bob"):
            project = (await found.client(who).post("/api/projects", json={"title": "uploads"})).json()["id"]
            assert (await found.client(who).get(f"/api/p/{project}/status")).status_code == 200
            found.projects[who] = project
            found.data[who] = found.server.projects.get(found.users[who], project).path / "data"
        yield found


def url(site, name: str, who: str = "alice", **params) -> str:
    return f"/api/p/{site.projects[who]}/uploads?" + urlencode({"name": name, **params})


def set_room(site, room: int, who: str = "alice") -> int:
    """Give ``who`` a quota with ``room`` bytes left; returns the quota."""
    quota = site.server.quota
    quota.forget(who)
    quota.limit = quota.usage(who) + room
    return quota.limit


def assert_nothing_left(site, who: str = "alice") -> None:
    assert staging(site.data[who]) == [], "a staging folder was left behind"
    assert site.server.quota.arriving(who) == (0, 0), "a reservation was not released"
    assert in_temp_folder(site.tmp) == 0


# -- the quota, counted as the bytes arrive -------------------------------------------------------------


@pytest.mark.parametrize("announced", [True, False], ids=["with Content-Length", "chunked"])
async def test_uploads_arriving_together_never_store_more_than_the_quota(site, announced):
    """Six uploads, each under the quota, together twice over it: what is stored stays under the
    quota, and each one refused answers 507 and leaves nothing."""
    quota = set_room(site, 3 * MIB)
    used = site.server.quota.usage("alice")
    site.server.quota.uploads_at_once = 6
    bodies = [multipart([(f"c{i}/{j}.png", noise_png(310, 10 * i + j)) for j in range(3)]) for i in range(6)]
    assert all(3 * MIB / 4 < len(body) < 3 * MIB / 3 for _, body in bodies)  # each fits, three at most together

    async def send(i: int, content_type: str, body: bytes) -> httpx.Response:
        async def chunks():
            for at in range(0, len(body), 64 * KIB):
                yield body[at:at + 64 * KIB]
        headers = {"content-type": content_type, **({"content-length": str(len(body))} if announced else {})}
        return await site.client("alice").post(url(site, f"up{i}"), content=chunks(), headers=headers)

    answers = await asyncio.gather(*(send(i, *body) for i, body in enumerate(bodies)))
    kept = [i for i, r in enumerate(answers) if r.status_code == 200]
    refused = [i for i, r in enumerate(answers) if r.status_code != 200]
    assert refused, "six uploads cannot all fit"
    for i in refused:
        assert answers[i].status_code == 507, answers[i].text
        assert "disk quota" in answers[i].json()["detail"]["message"]
        assert not (site.data["alice"] / f"up{i}").exists()
    if announced:  # the ones admitted first hold what they announced: three fit
        assert len(kept) == 3, [r.status_code for r in answers]
    assert used + sum(folder_bytes(site.data["alice"] / f"up{i}") for i in kept) <= quota
    assert_nothing_left(site)
    site.server.quota.forget("alice")
    assert site.server.quota.usage("alice") <= quota


async def test_the_body_never_goes_to_the_temp_folder_nor_past_the_quota_left(site):
    """A zip twice the quota's room streams in: at every chunk the server asks for, the temp folder
    holds nothing and the staging folder no more than the room; it is refused (507) and leaves
    nothing. A zip that fits lands, the same way."""
    data = site.data["alice"]

    async def stream(name: str, content_type: str, body: bytes, room: int) -> tuple[httpx.Response, int]:
        peak = 0

        async def chunks():
            nonlocal peak
            for at in range(0, len(body), 64 * KIB):
                # the server asks for the next chunk once it has written the last one: look now
                assert in_temp_folder(site.tmp) == 0, "the upload is spooled to the temp folder"
                peak = max(peak, staged_bytes(data))
                assert peak <= room, f"the staging folder holds {peak} bytes, the quota has {room} left"
                yield body[at:at + 64 * KIB]
        answer = await site.client("alice").post(url(site, name), content=chunks(),
                                                 headers={"content-type": content_type})
        return answer, peak

    room = 2 * MIB
    set_room(site, room)
    big = stored_zip([(f"pets/cat/{i}.png", noise_png(512, i)) for i in range(5)])  # 3.75 MiB
    answer, peak = await stream("big", *multipart([("pets.zip", big)]), room)
    assert answer.status_code == 507, answer.text
    assert answer.json()["detail"]["limit"] == "quota_left" and "disk quota" in answer.json()["detail"]["message"]
    assert peak > room / 2  # it did stream into the staging folder until the quota stopped it
    assert not (data / "big").exists()
    assert_nothing_left(site)

    room = 6 * MIB
    set_room(site, room)
    small = stored_zip([(f"pets/{kind}/{i}.png", noise_png(400, i)) for i in range(2) for kind in ("cat", "dog")])
    answer, peak = await stream("small", *multipart([("pets.zip", small)]), room)
    assert answer.status_code == 200, answer.text
    assert answer.json()["classes"] == {"cat": 2, "dog": 2} and peak >= len(small) * 0.9
    assert_nothing_left(site)


# -- a client that goes away ------------------------------------------------------------------------------


@asynccontextmanager
async def loopback(app):
    """The site on a real server on loopback, in this event loop."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning",
                                           timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done(), what="the server to start")
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def test_a_client_that_goes_away_mid_upload_leaves_nothing_and_frees_its_place(site):
    from nicegui import app

    data = site.data["alice"]
    before = tree(data)
    set_room(site, 8 * MIB)
    site.server.quota.uploads_at_once = 1
    content_type, body = multipart([(f"cat/{i}.png", noise_png(512, i)) for i in range(4)])  # 3 MiB
    async with loopback(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = (f"POST {url(site, 'cut')} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Authorization: Bearer {site.tokens['alice']}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            writer.write(head + body[:len(body) // 2])
            await writer.drain()
            await until(lambda: staged_bytes(data) > len(body) // 4, what="half the body in the staging folder")
        finally:
            writer.close()  # gone, half-way
            await writer.wait_closed()
        await until(lambda: not staging(data), what="the abandoned upload to be cleared")
    assert tree(data) == before
    assert_nothing_left(site)
    again = await site.client("alice").post(url(site, "again"),
                                            files=[("files", ("cat/1.png", noise_png(512, 9), "image/png"))])
    assert again.status_code == 200, again.text  # its place (one upload at once) and its bytes are free


# -- uploads at once ----------------------------------------------------------------------------------------


async def test_more_uploads_at_once_than_one_person_may_answer_429(site):
    gate = asyncio.Event()  # the server's default: two at once
    content_type, body = multipart([("cat/1.png", noise_png(200, 1)), ("cat/2.png", noise_png(200, 2))])

    def stalled(reading: asyncio.Event):
        async def chunks():
            yield body[:4096]
            reading.set()  # asked for more: admitted, and its first bytes are in
            await gate.wait()
            yield body[4096:]
        return chunks()

    reading = [asyncio.Event(), asyncio.Event()]
    first, second = (asyncio.create_task(site.client("alice").post(url(site, f"slow{i}"), content=stalled(reading[i]),
                                                                   headers={"content-type": content_type}))
                     for i in range(2))
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in reading)), 30)
        third = await site.client("alice").post(url(site, "third"), content=body,
                                                headers={"content-type": content_type})
        assert third.status_code == 429, third.text
        assert third.json()["detail"]["limit"] == "uploads_at_once"
        assert "uploads_at_once = 2" in third.json()["detail"]["message"]
        assert not (site.data["alice"] / "third").exists()
        bobs = await site.client("bob").post(url(site, "bobs", who="bob"), content=body,
                                             headers={"content-type": content_type})
        assert bobs.status_code == 200, bobs.text  # the limit is one person's
    finally:
        gate.set()
        answers = await asyncio.gather(first, second)
    assert [a.status_code for a in answers] == [200, 200]
    later = await site.client("alice").post(url(site, "later"), content=body, headers={"content-type": content_type})
    assert later.status_code == 200, later.text
    assert_nothing_left(site)


# -- any upload, any quota ----------------------------------------------------------------------------------


async def post_asgi(site, path: str, content_type: str, body: bytes, chunk: int, cut: int | None,
                    announced: bool) -> int:
    """POST ``body`` to the real app in chunks of ``chunk`` bytes; with ``cut``, the client goes away
    after that many bytes. Returns the status the app answered."""
    from nicegui import app

    target, _, query = path.partition("?")
    headers = [(b"authorization", f"Bearer {site.tokens['alice']}".encode()), (b"host", b"127.0.0.1:8080"),
               (b"content-type", content_type.encode())]
    if announced:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": target, "raw_path": target.encode(), "query_string": query.encode(), "root_path": "",
             "headers": headers, "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 40000)}
    sent = 0
    done = asyncio.Event()
    status: list[int] = []
    end = len(body) if cut is None else cut

    async def receive():
        nonlocal sent
        if sent >= end:
            if cut is None:  # all of it was sent: nothing more comes until the answer is out
                await done.wait()
            return {"type": "http.disconnect"}
        piece = body[sent:min(sent + chunk, end)]
        sent += len(piece)
        return {"type": "http.request", "body": piece, "more_body": sent < len(body)}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await app(scope, receive, send)
    return status[0]


SERIAL = itertools.count()
NAMES = st.sampled_from(["cat/1.png", "cat/2.png", "dog/1.jpg", "1.png", "../x.png", "/abs.png", "cat/x.txt",
                         ".DS_Store", "__MACOSX/._1.png", "a b/c/d.png", "pets.zip", "c:x.png"])
IMAGES = st.sampled_from([image_bytes(), image_bytes("JPEG", seed=1), noise_png(120, 3), noise_png(60, 4)])
CONTENTS = st.one_of(IMAGES, IMAGES, IMAGES, st.sampled_from([b"", b"not an image"]))
#: files that should be kept (distinct image paths), and anything
TAME = st.lists(st.tuples(st.sampled_from(["cat/", "dog/", "", "a b/c/"]), st.sampled_from(["1", "2", "x y"]),
                          st.sampled_from([".png", ".jpg"])).map("".join), min_size=1, max_size=4, unique=True).flatmap(
    lambda names: st.tuples(*(IMAGES for _ in names)).map(lambda data: list(zip(names, data))))
FILES = st.one_of(TAME, TAME, st.lists(st.tuples(NAMES, CONTENTS), min_size=1, max_size=4))
UPLOADS = st.lists(st.fixed_dictionaries({
    "zip": st.booleans(), "files": FILES, "chunk": st.sampled_from([1000, 7 * KIB, 64 * KIB]),
    "cut": st.one_of(st.none(), st.none(), st.none(), st.floats(0.0, 0.95)), "announced": st.booleans(),
    "field": st.booleans()}), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(uploads=UPLOADS, room=st.sampled_from([0, 20 * KIB, 60 * KIB, 120 * KIB, 250 * KIB, MIB, None]),
       at_once=st.integers(1, 3))
async def test_any_uploads_at_once_store_no_more_than_the_quota_and_a_refusal_stores_nothing(site, uploads, room,
                                                                                              at_once):
    """Uploads together (zips or files, any names, cut off or whole, in any chunks) under any quota:
    each is kept whole or refused leaving nothing, and what is kept stays within the quota."""
    data = site.data["alice"]
    quota = site.server.quota
    quota.uploads_at_once = at_once
    if room is None:
        quota.limit = None
    else:
        set_room(site, room)
    quota.forget("alice")
    used = quota.usage("alice")
    before = tree(site.server.root / "users")
    names = [f"any{next(SERIAL)}" for _ in uploads]

    async def one(name: str, upload) -> int:
        files = upload["files"]
        if upload["zip"]:
            files = [("upload.zip", stored_zip(files))]
        content_type, body = multipart(files, {"note": "x"} if upload["field"] else None)
        cut = None if upload["cut"] is None else int(len(body) * upload["cut"])
        return await post_asgi(site, url(site, name), content_type, body, upload["chunk"], cut, upload["announced"])

    statuses = await asyncio.gather(*(one(name, upload) for name, upload in zip(names, uploads)))
    assert all(s in (200, 400, 413, 422, 429, 507) for s in statuses), statuses
    for s in statuses:
        event(f"answered {s}")
    kept = [name for name, s in zip(names, statuses) if s == 200]
    for name, s in zip(names, statuses):
        assert (data / name).is_dir() == (s == 200), (name, s)
    after = tree(site.server.root / "users")
    new = {path for path in after if path not in before}
    folders = [str((data / name).relative_to(site.server.root / "users")) for name in kept]
    assert all(any(path == f or path.startswith(f + "/") for f in folders) for path in new), new
    assert {path: v for path, v in after.items() if path in before} == before  # nothing else changed
    added = sum(folder_bytes(data / name) for name in kept)
    if room is not None:
        assert added <= room
    assert_nothing_left(site)
    assert quota.usage("alice") == used + added  # the reservations became exactly what was stored
    for name in kept:
        assert (await site.client("alice").delete(f"/api/p/{site.projects['alice']}/data/{name}")).status_code == 200
