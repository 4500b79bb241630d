"""The one downloader (weights and data sets) against a real HTTP server on loopback: a file is
kept only when all of it came and its digest is the published one; a stalled server, a cut
connection or a wrong file leave nothing behind; NODEFLOW_MIRROR_URL redirects every download."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.engine.download import MIRROR_ENV, DownloadError, download, source_url
from tests.mirror import unreachable_url

BODY = bytes(range(256)) * 4096  # 1 MiB: more than one read of the stream
SHA = hashlib.sha256(BODY).hexdigest()
MD5 = hashlib.md5(BODY).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_file_whose_digest_begins_as_published_is_kept(mirror, tmp_path):
    mirror.files["resnet18-abc.pth"] = BODY
    seen = []
    path = download(f"{mirror.url}/resnet18-abc.pth", tmp_path / "w" / "resnet18-abc.pth", "sha256", SHA[:8], 5,
                    progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == BODY and leftovers(tmp_path / "w") == ["resnet18-abc.pth"]
    assert seen[-1] == (len(BODY), len(BODY))
    assert download(f"{mirror.url}/resnet18-abc.pth", tmp_path / "md5" / "x", "md5", MD5, 5).read_bytes() == BODY


def test_a_file_with_another_digest_is_refused_and_not_kept(mirror, tmp_path):
    mirror.files["resnet18-f37072fd.pth"] = BODY
    with pytest.raises(DownloadError, match="is not the published resnet18-f37072fd.pth") as caught:
        download(f"{mirror.url}/resnet18-f37072fd.pth", tmp_path / "w" / "resnet18-f37072fd.pth", "sha256",
                 "f37072fd", 5)
    assert f"SHA256 is {SHA[:8]}" in str(caught.value) and "not kept" in str(caught.value)
    assert leftovers(tmp_path / "w") == []


@pytest.mark.parametrize("fault, timeout, message", [
    ("stall", 0.5, r"did not answer within 0.5 s"),
    ("cut", 5, rf"closed after {len(BODY) // 2} of {len(BODY)} bytes"),
], ids=["a stalled server times out", "a connection cut before the promised length"])
def test_a_server_that_breaks_off_leaves_nothing(mirror, tmp_path, fault, timeout, message):
    mirror.files["r18.pth"] = BODY
    getattr(mirror, fault).add("r18.pth")
    with pytest.raises(DownloadError, match=message):
        download(f"{mirror.url}/r18.pth", tmp_path / "w" / "r18.pth", "sha256", SHA[:8], timeout)
    assert leftovers(tmp_path / "w") == []


def test_missing_files_and_unreachable_servers_are_named(mirror, tmp_path):
    with pytest.raises(DownloadError, match="answered 404"):
        download(f"{mirror.url}/absent.pth", tmp_path / "w" / "absent.pth", "sha256", "ab", 5)
    with pytest.raises(DownloadError, match="could not reach"):
        download(f"{unreachable_url()}/x.pth", tmp_path / "w" / "x.pth", "sha256", "ab", 5)
    with pytest.raises(DownloadError, match="no checksum is published"):
        download(f"{mirror.url}/x.pth", tmp_path / "w" / "x.pth", "sha256", "", 5)
    assert leftovers(tmp_path / "w") == [] and mirror.requests == ["/models/absent.pth"]


def test_the_mirror_replaces_everything_before_the_file_name(monkeypatch):
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert source_url(url) == url
    monkeypatch.setenv(MIRROR_ENV, "http://artifacts.lab:8080/torch/")
    assert source_url(url) == "http://artifacts.lab:8080/torch/resnet18-f37072fd.pth"
    pets = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz"
    assert source_url(pets) == "http://artifacts.lab:8080/torch/images.tar.gz"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60),
       st.booleans())
def test_any_mirror_setting_is_used_or_refused_naming_it(tmp_path_factory, text, as_url):
    """Whatever the setting holds: an http(s) URL is used (one where nothing listens is tried, and
    the download fails cleanly), anything else is refused naming the setting; never an exception
    of another kind, and no file is written."""
    folder = tmp_path_factory.mktemp("w")
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MIRROR_ENV, unreachable_url() + text if as_url else text)
        try:
            source = source_url(url)
        except DownloadError as exc:
            assert MIRROR_ENV in str(exc) and not as_url
        else:
            if not text.strip() and not as_url:
                assert source == url
            else:
                assert source.endswith("/resnet18-f37072fd.pth") and source.startswith(("http://", "https://"))
            if as_url:  # only where nothing listens: never a lookup of a host the text happens to name
                with pytest.raises(DownloadError):
                    download(source, folder / "r.pth", "sha256", "f37072fd", 2)
    assert leftovers(folder) == []
