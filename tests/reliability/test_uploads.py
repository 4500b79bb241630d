"""Uploads into a project's data folder, attacked: real zips built here with the tricks people
use (zip-slip, links, bombs, files that only look like images), each refused with its reason,
and nothing written outside the folder, nor left half-written inside it."""

from __future__ import annotations

import ast
import io
import random
import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nodeflow.uploads import (IMAGE_SUFFIXES, SPLIT_NAMES, STAGING_PREFIX, MultipartUpload, UploadLimits, UploadRefused,
                              receive_files, receive_zip, remove_leftovers)
from tests.imagegen import draw


def image_bytes(fmt: str = "PNG", size: int = 16, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    draw("circle", size, random.Random(seed)).save(buffer, fmt)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels but that holds almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]],
             compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders and links)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with its data folder, a graph, and a file beside the project."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "graphs").mkdir()
    (root / "graphs" / "g.json").write_text("{}")
    (tmp_path / "outside.txt").write_text("not to be touched")
    return root


def refused(tmp_path: Path, project: Path, call, *match: str) -> UploadRefused:
    """Run an upload that must be refused; check the message and that nothing changed anywhere."""
    before = tree(tmp_path)
    with pytest.raises(UploadRefused) as caught:
        call()
    message = str(caught.value)
    for part in match:
        assert part in message, message
    assert message.startswith("upload refused: ") and message.endswith("; nothing was saved")
    assert tree(tmp_path) == before  # nothing outside, no staging folder, nothing half-written
    return caught.value


# -- what is accepted -----------------------------------------------------------------------------------


def test_a_zip_of_class_folders_lands_in_the_data_folder(tmp_path, project):
    jpeg, png = image_bytes("JPEG"), image_bytes("PNG", seed=1)
    source = make_zip(tmp_path / "pets.zip", [
        ("PetImages/Cat/1.jpg", jpeg), ("PetImages/Cat/2.JPG", jpeg), ("PetImages/Cat/deep/3.jpeg", jpeg),
        ("PetImages/Dog/1.png", png), ("PetImages/", b""),
        ("__MACOSX/PetImages/Cat/._1.jpg", b"\0\5\26\7 apple double"), ("PetImages/.DS_Store", b"bud1"),
        ("PetImages/Dog/Thumbs.db", b"thumbs"),
    ])
    summary = receive_zip(source, project / "data", "pets")
    assert summary.folder == "pets" and summary.path == project / "data" / "pets"
    assert summary.classes == {"Cat": 3, "Dog": 1} and summary.loose == 0 and summary.images == 4
    assert summary.bytes == 3 * len(jpeg) + len(png)
    assert sorted(summary.skipped) == ["PetImages/.DS_Store", "PetImages/Dog/Thumbs.db",
                                       "__MACOSX/PetImages/Cat/._1.jpg"]
    assert (project / "data" / "pets" / "Cat" / "deep" / "3.jpeg").read_bytes() == jpeg
    assert sorted(p.name for p in (project / "data").iterdir()) == ["pets"]  # no staging folder left
    assert not list((project / "data" / "pets").rglob(".DS_Store"))


def test_images_at_the_top_of_a_zip_are_loose_and_a_single_class_folder_stays(tmp_path, project):
    png = image_bytes()
    summary = receive_zip(make_zip(tmp_path / "a.zip", [("cats/1.png", png), ("cats/2.png", png)]),
                          project / "data", "only cats")
    assert summary.classes == {"cats": 2} and summary.loose == 0
    summary = receive_zip(make_zip(tmp_path / "b.zip", [("1.png", png), ("dogs/2.png", png)]), project / "data", "mix")
    assert summary.classes == {"dogs": 1} and summary.loose == 1


def test_dropped_files_with_their_folders(tmp_path, project):
    jpeg = image_bytes("JPEG")
    files = [("set/train/cat/1.jpg", io.BytesIO(jpeg)), ("set/train/dog/1.jpg", io.BytesIO(jpeg)),
             ("set/test/cat/2.jpg", io.BytesIO(jpeg))]
    summary = receive_files(files, project / "data", "dropped")
    assert summary.classes == {"cat": 2, "dog": 1}  # the classes inside train/ and test/, not the splits
    assert (project / "data" / "dropped" / "train" / "dog" / "1.jpg").read_bytes() == jpeg


def test_every_format_the_dataset_reads_is_taken(tmp_path, project):
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP",
               ".tif": "TIFF", ".tiff": "TIFF"}
    assert set(formats) == IMAGE_SUFFIXES
    entries = [(f"c/x{suffix}", image_bytes(fmt)) for suffix, fmt in formats.items()]
    assert receive_zip(make_zip(tmp_path / "f.zip", entries), project / "data", "formats").images == len(formats)


def engine_folders_constant(name: str):
    """A constant of the engine's one declaration of image folders, read from its source (nodeflow
    cannot import the catalogue)."""
    source = (Path(__file__).resolve().parents[2] / "nodes" / "engine" / "folders.py").read_text()
    found = [node.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]
    assert len(found) == 1
    return ast.literal_eval(found[0])


def test_the_suffixes_are_the_ones_the_dataset_loader_reads():
    assert engine_folders_constant("IMAGE_SUFFIXES") == IMAGE_SUFFIXES


def test_the_split_folders_are_the_ones_the_dataset_loader_knows():
    aliases = engine_folders_constant("SPLIT_ALIASES")
    assert {alias for names in aliases.values() for alias in names} == SPLIT_NAMES


# -- paths that leave the folder, links ------------------------------------------------------------------


@pytest.mark.parametrize("name, why", [
    ("../evil.png", "'..'"), ("cats/../../evil.png", "'..'"), ("..\\evil.png", "'..'"),
    ("/tmp/evil.png", "absolute path"), ("\\evil.png", "absolute path"),
    ("C:/evil.png", "drive letter"), ("c:evil.png", "drive letter"),
])
def test_zip_slip_is_refused(tmp_path, project, name, why):
    source = make_zip(tmp_path / "slip.zip", [("cats/ok.png", image_bytes()), (name, image_bytes())])
    error = refused(tmp_path, project, lambda: receive_zip(source, project / "data", "slip"),
                    f"'{name}'", why, "leaves the upload folder (zip-slip)")
    assert error.entry == name


def test_a_symlink_inside_a_zip_is_refused(tmp_path, project):
    link = zipfile.ZipInfo("cats/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    source = make_zip(tmp_path / "link.zip", [("cats/1.png", image_bytes()), (link, b"../../../outside.txt")])
    refused(tmp_path, project, lambda: receive_zip(source, project / "data", "links"),
            "'cats/link.png'", "a link inside the zip")


def test_a_device_entry_and_an_encrypted_entry_are_refused(tmp_path, project):
    fifo = zipfile.ZipInfo("cats/pipe.png")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    source = make_zip(tmp_path / "fifo.zip", [(fifo, b"")])
    refused(tmp_path, project, lambda: receive_zip(source, project / "data", "fifo"), "not a regular file")
    source = make_zip(tmp_path / "enc.zip", [("cats/1.png", image_bytes())], zipfile.ZIP_STORED)
    data = bytearray(source.read_bytes())  # zipfile cannot encrypt: set the flag in both headers
    for signature, offset in ((b"PK\3\4", 6), (b"PK\1\2", 8)):
        at = data.index(signature) + offset
        data[at] |= 0x1
    source.write_bytes(bytes(data))
    refused(tmp_path, project, lambda: receive_zip(source, project / "data", "enc"), "an encrypted entry")


# -- zip bombs and limits ----------------------------------------------------------------------------------


def test_a_zip_bomb_is_stopped_by_its_ratio_while_it_inflates(tmp_path, project):
    source = make_zip(tmp_path / "bomb.zip", [("cats/bomb.png", b"\0" * (64 * 2**20))])
    assert source.stat().st_size < 100_000  # a modest file that would be 64 MiB
    error = refused(tmp_path, project, lambda: receive_zip(source, project / "data", "bomb"),
                    "'cats/bomb.png'", "expands more than max_ratio = 200 times its compressed size (a zip bomb?)")
    assert error.limit == "max_ratio"


def lie(source: Path, field: str, value: int) -> Path:
    """A copy of ``source`` whose first entry declares ``value`` as its ``compressed`` or
    ``uncompressed`` size, in both of its headers."""
    data = bytearray(source.read_bytes())
    local, central = data.index(b"PK\3\4"), data.index(b"PK\1\2")
    offsets = {"compressed": (18, 20), "uncompressed": (22, 24)}[field]
    for at in (local + offsets[0], central + offsets[1]):
        data[at:at + 4] = struct.pack("<I", value)
    lying = source.with_name(f"{field}-{source.name}")
    lying.write_bytes(bytes(data))
    return lying


def test_a_bomb_whose_headers_lie_about_its_sizes_is_refused_too(tmp_path, project):
    """The sizes that count are the bytes that come out: a header claiming a small size, or a
    compressed size that reaches past the archive, is caught unpacking."""
    source = make_zip(tmp_path / "liar.zip", [("cats/bomb.png", b"\0" * (16 * 2**20))])
    small, long = lie(source, "uncompressed", 100), lie(source, "compressed", 2**31 - 1)
    refused(tmp_path, project, lambda: receive_zip(small, project / "data", "liar"),
            "'cats/bomb.png'", "cannot be unpacked (Bad CRC-32")
    refused(tmp_path, project, lambda: receive_zip(long, project / "data", "liar"),
            "'cats/bomb.png'", "cannot be unpacked (the zip ends before this entry does)")


def test_a_bomb_that_hides_its_ratio_behind_padding_is_stopped_by_its_size(tmp_path, project):
    """Its header claims the padding that follows as its own compressed bytes, so neither its
    ratio nor the archive's looks like a bomb; the bytes that come out are counted all the same."""
    padding = random.Random(0).randbytes(2**20)
    source = make_zip(tmp_path / "padded.zip", [("cats/bomb.png", b"\0" * (16 * 2**20))])
    compressed = zipfile.ZipFile(source).infolist()[0].compress_size
    with zipfile.ZipFile(source, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr("cats/pad.png", padding)
    padded = lie(source, "compressed", compressed + len(padding))
    limits = UploadLimits(max_total_bytes=8 * 2**20)
    error = refused(tmp_path, project, lambda: receive_zip(padded, project / "data", "padded", limits),
                    "'cats/bomb.png'", "the upload is larger than max_total_bytes = 8.0 MiB")
    assert error.limit == "max_total_bytes"


def test_many_small_entries_that_each_compress_well_are_stopped_as_a_whole(tmp_path, project):
    """Each entry is a real 500x500 one-colour BMP (750 KB, under the per-entry floor); together
    the zip expands more than 200 times."""
    buffer = io.BytesIO()
    Image.new("RGB", (500, 500), (255, 255, 255)).save(buffer, "BMP")
    source = make_zip(tmp_path / "flat.zip", [(f"white/{i}.bmp", buffer.getvalue()) for i in range(40)])
    refused(tmp_path, project, lambda: receive_zip(source, project / "data", "flat"),
            "the zip expands more than max_ratio = 200 times its size (a zip bomb?)")


@pytest.mark.parametrize("limits, message, limit", [
    (UploadLimits(max_files=3), "the zip holds 4 files, more than max_files = 3", "max_files"),
    (UploadLimits(max_total_bytes=1000), "the upload is larger than max_total_bytes = 1000 B", "max_total_bytes"),
    (UploadLimits(quota_left=1000), "the upload is larger than what your disk quota has left (1000 B)", "quota_left"),
    (UploadLimits(quota_left=0), "what your disk quota has left (nothing)", "quota_left"),
    (UploadLimits(max_pixels=100), "16×16 = 256 pixels, more than max_pixels = 100", "max_pixels"),
])
def test_each_limit_is_named_when_hit(tmp_path, project, limits, message, limit):
    source = make_zip(tmp_path / "four.zip", [(f"c/{i}.png", image_bytes(seed=i)) for i in range(4)])
    error = refused(tmp_path, project, lambda: receive_zip(source, project / "data", "four", limits), message)
    assert error.limit == limit


def test_the_file_limit_also_counts_dropped_files(tmp_path, project):
    files = [(f"c/{i}.png", io.BytesIO(image_bytes())) for i in range(3)]
    refused(tmp_path, project, lambda: receive_files(files, project / "data", "drop", UploadLimits(max_files=2)),
            "'c/2.png'", "more than max_files = 2 files")


# -- files that are not images -----------------------------------------------------------------------------


@pytest.mark.parametrize("name, data, message", [
    ("cats/empty.jpg", b"", "an empty file (0 bytes) is not an image"),
    ("cats/notes.jpg", b"just some text, renamed\n" * 10, "not a readable image (UnidentifiedImageError"),
    ("cats/notes.txt", b"text", "not an image file (images end in .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)"),
    ("cats/cut.jpg", image_bytes("JPEG", size=64)[:300], "not a readable image"),
    ("cats/ps.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not a readable image"),
    ("cats/huge.png", png_header(10_000, 5_000), "10000×5000 = 50,000,000 pixels, more than max_pixels = 40,000,000"),
    ("cats/bomb.png", png_header(100_000, 100_000), "more pixels than Pillow's decompression-bomb limit"),
])
def test_files_that_are_not_images_are_refused(tmp_path, project, name, data, message):
    source = make_zip(tmp_path / "bad.zip", [("cats/good.png", image_bytes()), (name, data)])
    error = refused(tmp_path, project, lambda: receive_zip(source, project / "data", "bad"), f"'{name}'", message)
    assert error.entry == name
    dropped = [("cats/good.png", io.BytesIO(image_bytes())), (name, io.BytesIO(data))]
    refused(tmp_path, project, lambda: receive_files(dropped, project / "data", "bad"), f"'{name}'", message)


def test_an_upload_with_no_image_or_that_is_no_zip(tmp_path, project):
    junk_only = make_zip(tmp_path / "junk.zip", [("__MACOSX/._a.png", b"x"), ("folder/", b"")])
    refused(tmp_path, project, lambda: receive_zip(junk_only, project / "data", "junk"), "no image files in the upload")
    (tmp_path / "fake.zip").write_bytes(b"PK\3\4 but not really a zip" * 10)
    refused(tmp_path, project, lambda: receive_zip(tmp_path / "fake.zip", project / "data", "fake"),
            "not a readable zip file")


def test_the_same_path_twice_and_a_file_where_a_folder_goes(tmp_path, project):
    png = image_bytes()
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = make_zip(tmp_path / "twice.zip", [("c/1.png", png), ("c/1.png", png)])
    refused(tmp_path, project, lambda: receive_zip(twice, project / "data", "twice"), "the same path appears twice")
    clash = [("c/1.png", io.BytesIO(png)), ("c/1.png/2.png", io.BytesIO(png))]
    refused(tmp_path, project, lambda: receive_files(clash, project / "data", "clash"), "its folder cannot be made")


@pytest.mark.parametrize("name", ["", " ", ".hidden", "../up", "a/b", "x" * 65, "nul\0", "tab\tname"])
def test_a_folder_name_that_is_not_a_plain_name_is_refused(tmp_path, project, name):
    source = make_zip(tmp_path / "ok.zip", [("c/1.png", image_bytes())])
    refused(tmp_path, project, lambda: receive_zip(source, project / "data", name), "the folder name", "is not allowed")


def test_an_existing_folder_is_never_replaced(tmp_path, project):
    (project / "data" / "pets").mkdir()
    (project / "data" / "pets" / "mine.png").write_bytes(b"keep")
    source = make_zip(tmp_path / "ok.zip", [("c/1.png", image_bytes())])
    refused(tmp_path, project, lambda: receive_zip(source, project / "data", "pets"),
            "the data folder already has 'pets'; choose another name")


def test_leftovers_of_a_killed_upload_are_removed(project):
    (project / "data" / f"{STAGING_PREFIX}abc" / "c").mkdir(parents=True)
    (project / "data" / "kept").mkdir()
    assert [p.name for p in remove_leftovers(project / "data")] == [f"{STAGING_PREFIX}abc"]
    assert sorted(p.name for p in (project / "data").iterdir()) == ["kept"]


# -- any input ------------------------------------------------------------------------------------------

printable = st.text(st.characters(whitelist_categories=("L", "N", "P", "S")), min_size=1, max_size=12)
parts = st.one_of(st.sampled_from(["..", ".", "", "C:", "c:", "__MACOSX", ".DS_Store", "._x.png", "a b"]),
                  st.sampled_from(["cats", "dogs", "x"]), printable, printable, printable,
                  st.text(min_size=1, max_size=12))
names = st.lists(parts, min_size=1, max_size=4).flatmap(
    lambda ps: st.sampled_from(["/", "/", "\\"]).map(lambda sep: sep.join(ps)))
suffixed = st.tuples(names, st.sampled_from(["", ".png", ".jpg", ".jpg", ".png", ".txt", ".PNG"])).map("".join)
images = st.sampled_from([image_bytes(), image_bytes("JPEG"), image_bytes("GIF", seed=2)])
contents = st.one_of(images, images, st.just(png_header(9000, 9000)), st.just(b""), st.binary(max_size=200))
#: mostly plain files (no mode, or a regular one), sometimes a link or a device
modes = st.sampled_from([0] * 6 + [stat.S_IFREG] * 6 + [stat.S_IFLNK, stat.S_IFCHR])
wild = st.tuples(suffixed, contents, modes)
tame = st.tuples(st.tuples(st.sampled_from(["cats/", "dogs/", "", "a b/c/"]), st.from_regex(r"\w{1,8}", fullmatch=True),
                           st.sampled_from([".png", ".jpg"])).map("".join), images, st.just(0))
#: anything; uploads that should pass; and uploads that should pass but for one wild entry
entries = st.one_of(st.lists(wild, max_size=6), st.lists(tame, min_size=1, max_size=6),
                    st.tuples(st.lists(tame, min_size=1, max_size=4), wild).map(lambda t: [*t[0], t[1]]))


def check_any_upload(tmp_path: Path, call) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True, exist_ok=True)
    before = tree(tmp_path)
    try:
        summary = call(project / "data")
    except UploadRefused:
        assert tree(tmp_path) == before
        return
    after = tree(tmp_path)
    new = {k for k in after if k not in before}
    assert new and all(k.startswith("project/data/upload") for k in new), new
    assert {k: v for k, v in after.items() if k in before} == before
    assert summary.images == sum(1 for p in summary.path.rglob("*") if p.is_file())


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=entries)
def test_any_zip_is_taken_or_refused_and_nothing_lands_outside(tmp_path_factory, entries):
    tmp_path = tmp_path_factory.mktemp("any")
    infos = []
    for name, data, mode in entries:
        info = zipfile.ZipInfo(name or "x")
        info.external_attr = (mode | 0o644) << 16 if mode else 0
        infos.append((info, data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, which is one of the inputs
        source = make_zip(tmp_path / "any.zip", infos)
    check_any_upload(tmp_path, lambda data: receive_zip(source, data, "upload"))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(files=entries, raw=st.binary(max_size=300))
def test_any_dropped_files_or_bytes_are_taken_or_refused_and_nothing_lands_outside(tmp_path_factory, files, raw):
    tmp_path = tmp_path_factory.mktemp("any")
    check_any_upload(tmp_path, lambda data: receive_files([(n, io.BytesIO(d)) for n, d, _ in files], data, "upload"))
    (tmp_path / "raw.zip").write_bytes(raw)
    check_any_upload(tmp_path, lambda data: receive_zip(tmp_path / "raw.zip", data, "upload-raw"))



# -- a browser's multipart body, taken in as it arrives ----------------------------------------------------


def multipart_body(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[str, bytes]:
    """The content type and body of a browser's form with ``files`` in the field 'files' (as httpx
    encodes them), and the form fields ``fields``."""
    import httpx

    if not files:  # httpx sends a form without files urlencoded: a browser's FormData is multipart still
        body = b"".join(f'--b0undary\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in (fields or {}).items())
        return "multipart/form-data; boundary=b0undary", body + b"--b0undary--\r\n"
    request = httpx.Request("POST", "http://127.0.0.1/", data=fields or {},
                            files=[("files", (name, data, "application/octet-stream")) for name, data in files])
    return request.headers["content-type"], request.read()


def stream(content_type: str, body: bytes, data: Path, name: str, chunk: int = 7000,
           limits: UploadLimits = UploadLimits()):
    """Feed ``body`` to a MultipartUpload in chunks of ``chunk`` bytes; its summary."""
    with MultipartUpload(content_type, data, name, limits) as upload:
        for at in range(0, len(body), chunk):
            upload.feed(body[at:at + chunk])
        return upload.finish()


def test_a_multipart_body_lands_as_its_files_or_as_its_one_zip(tmp_path, project):
    png, jpeg = image_bytes(), image_bytes("JPEG")
    summary = stream(*multipart_body([("set/cat/1.png", png), ("set/dog/1.jpg", jpeg), ("set/.DS_Store", b"x")],
                                     {"note": "kept out"}), project / "data", "dropped", chunk=1)
    assert summary.classes == {"cat": 1, "dog": 1} and summary.skipped == ["set/.DS_Store"]
    assert (project / "data" / "dropped" / "dog" / "1.jpg").read_bytes() == jpeg
    archive = make_zip(tmp_path / "pets.zip", [("pets/cat/1.png", png), ("pets/dog/1.png", png)]).read_bytes()
    summary = stream(*multipart_body([("pets.zip", archive)]), project / "data", "zipped", chunk=64 * 1024)
    assert summary.classes == {"cat": 1, "dog": 1} and summary.bytes == 2 * len(png)
    assert sorted(p.name for p in (project / "data").iterdir()) == ["dropped", "zipped"]  # no staging, no zip


def cut_short() -> tuple[str, bytes]:
    content_type, body = multipart_body([("c/1.png", image_bytes())])
    return content_type, body[:-20]


@pytest.mark.parametrize("body, message", [
    (cut_short, "not a readable multipart body (the body ends before its closing boundary)"),
    (lambda: multipart_body([], {f"f{i}": "x" for i in range(5)}),
     "not a readable multipart body (Too many fields. Maximum number of fields is 4.)"),
    (lambda: multipart_body([], {"note": "x"}), "no files in the field 'files'; nothing was saved"),
    (lambda: ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n"),
     'not a readable multipart body (The Content-Disposition header field "name" must be provided.)'),
    (lambda: ("multipart/form-data", b"--x\r\n"), "not a readable multipart body (Missing boundary in multipart.)"),
    (lambda: multipart_body([("pets.zip", b"PK\3\4 no zip"), ("c/1.png", image_bytes())]),
     "'pets.zip': not an image file"),
    (lambda: multipart_body([("pets.zip", b"PK\3\4 no zip")]), "not a readable zip file"),
])
def test_a_multipart_body_that_is_not_one_upload_is_refused_and_leaves_nothing(tmp_path, project, body, message):
    content_type, data = body()
    before = tree(tmp_path)
    with pytest.raises(UploadRefused) as caught:
        stream(content_type, data, project / "data", "up")
    assert str(caught.value).startswith("upload refused: ") and message in str(caught.value), str(caught.value)
    assert tree(tmp_path) == before


def test_a_body_over_the_limit_is_refused_as_it_arrives(tmp_path, project):
    content_type, body = multipart_body([("c/1.bmp", b"BM" + bytes(3 * 2**20))])
    limits = UploadLimits(max_total_bytes=2**20)
    written = []

    def feed_all() -> None:
        with MultipartUpload(content_type, project / "data", "big", limits) as upload:
            for at in range(0, len(body), 64 * 1024):
                written.append(sum(p.stat().st_size for p in (project / "data").rglob("*") if p.is_file()))
                upload.feed(body[at:at + 64 * 1024])

    error = refused(tmp_path, project, feed_all, "the upload is larger than max_total_bytes = 1.0 MiB")
    assert error.limit == "max_total_bytes" and max(written) <= 2**20  # stopped at the limit, not after the body


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(files=entries, chunk=st.integers(1, 5000), as_zip=st.booleans())
def test_any_multipart_upload_in_any_chunks_is_taken_as_the_same_files_would_be(tmp_path_factory, files, chunk,
                                                                                 as_zip):
    """The body streamed in chunks of any size is taken or refused as the files given whole would
    be, lands the same files, and a refusal leaves nothing."""
    tmp_path = tmp_path_factory.mktemp("any")
    named = [(name or "x", data) for name, data, _ in files]
    if as_zip:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            named = [("any.zip", make_zip(tmp_path / "any.zip", [(n, d) for n, d in named]).read_bytes())]
    content_type, body = multipart_body(named)
    check_any_upload(tmp_path, lambda data: stream(content_type, body, data, "upload", chunk))
    if as_zip:
        whole = lambda data: receive_zip(io.BytesIO(named[0][1]), data, "upload-whole")  # noqa: E731
    else:
        whole = lambda data: receive_files([(n, io.BytesIO(d)) for n, d in named], data, "upload-whole")  # noqa: E731
    check_any_upload(tmp_path, whole)
    streamed, given = tmp_path / "project" / "data" / "upload", tmp_path / "project" / "data" / "upload-whole"
    assert streamed.exists() == given.exists()
    if streamed.exists():
        assert tree(streamed) == tree(given)
