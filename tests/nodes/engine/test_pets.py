"""Oxford-IIIT Pet's files as input: an archive may not write outside its folder, and any listing
either sorts into cat/ and dog/ or is refused naming the line, leaving nothing half-sorted."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.engine.download import MIRROR_ENV, DownloadError
from nodes.engine.pets import PETS, fetch, sort_by_species
from tests.imagegen import make_pets_layout


def test_an_archive_with_a_path_outside_its_folder_is_refused(tmp_path, mirror, monkeypatch):
    from torchvision.datasets import OxfordIIITPet

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        entry = tarfile.TarInfo("../../escaped.txt")
        entry.size = 4
        tar.addfile(entry, io.BytesIO(b"gone"))
    mirror.files["images.tar.gz"] = buffer.getvalue()
    images_url = OxfordIIITPet._RESOURCES[0][0]
    monkeypatch.setattr(OxfordIIITPet, "_RESOURCES", ((images_url, hashlib.md5(buffer.getvalue()).hexdigest()),))
    monkeypatch.setenv(MIRROR_ENV, mirror.url)
    base = tmp_path / "workspace" / "datasets"
    with pytest.raises(DownloadError, match="images.tar.gz could not be unpacked safely"):
        fetch(base, timeout=5)
    assert not list(base.iterdir()) and not list(tmp_path.rglob("escaped.txt"))


LINE = st.one_of(
    st.builds(lambda name, species: f"{name} 1 {species} 1", st.sampled_from(["Bengal_1", "pug_2", "../x", ".hidden"]),
              st.sampled_from(["1", "2", "3", "cat"])),
    st.sampled_from(["", "# comment", "Bengal_1", "pug_2 4"]),
    st.text(max_size=30),
)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(LINE, max_size=6), st.lists(LINE, max_size=6))
def test_any_listing_sorts_or_is_refused_naming_the_line(tmp_path_factory, trainval, test):
    base = tmp_path_factory.mktemp("pets")
    pets = make_pets_layout(base / PETS, per_breed=1, test_per_breed=0, size=16)
    (pets / "annotations" / "trainval.txt").write_text("\n".join(trainval))
    (pets / "annotations" / "test.txt").write_text("\n".join(test))
    target = base / "cats_vs_dogs"
    try:
        sort_by_species(pets, target)
    except ValueError as exc:
        assert ("line " in str(exc) or "lists no images" in str(exc)) and "species 1 (cat) or 2 (dog)" in str(exc)
        assert not target.exists()
    else:
        links = sorted(p.relative_to(target).as_posix() for p in target.rglob("*.jpg"))
        assert all(link.split("/")[1] in ("cat", "dog") for link in links)
        assert all((target / link).resolve().parent == (pets / "images").resolve() for link in links)
    assert sorted(p.name for p in base.iterdir()) in ([PETS], ["cats_vs_dogs", PETS])
