"""Oxford-IIIT Pet as cats vs dogs: the published data set, fetched where torchvision keeps it,
then sorted into train/ and test/ folders of cat/ and dog/ links that any image-folder reader takes."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from nodes.engine.download import DownloadError, download, file_name, source_url

#: torchvision's folder for the data set under its root: images/ and annotations/, as published
PETS = "oxford-iiit-pet"
#: the species column of annotations/trainval.txt and test.txt
SPECIES = {"1": "cat", "2": "dog"}
LISTINGS = (("train", "trainval.txt"), ("test", "test.txt"))


def cats_vs_dogs(base: Path, timeout: float, progress: Callable[[int, int], None] | None = None) -> Path:
    """``base/cats_vs_dogs`` with train/ and test/ folders of cat/ and dog/, linking to the images in
    ``base/oxford-iiit-pet``; a copy of the published layout already there is used as it is,
    else both archives are downloaded (``NODEFLOW_MIRROR_URL`` applies) and checked first."""
    target = base / "cats_vs_dogs"
    if (target / "train").is_dir():
        return target
    if not published(base):
        fetch(base, timeout, progress)
    sort_by_species(base / PETS, target)
    return target


def published(base: Path) -> bool:
    """Whether torchvision's own reader finds the data set under ``base`` as already downloaded."""
    from torchvision.datasets import OxfordIIITPet

    try:
        OxfordIIITPet(str(base), split="trainval", download=False)
    except RuntimeError:  # torchvision's "Dataset not found"
        return False
    return True


def fetch(base: Path, timeout: float, progress: Callable[[int, int], None] | None = None) -> None:
    """Download torchvision's archives of the data set (its URLs and MD5 checksums), unpack them
    beside the target and move the result into place only when all of it arrived."""
    from torchvision.datasets import OxfordIIITPet

    staging = base / f".{PETS}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for url, md5 in OxfordIIITPet._RESOURCES:
            archive = download(source_url(url), staging / file_name(url), "md5", md5, timeout, progress)
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(staging, filter="data")  # no paths outside staging, no device files
            except tarfile.TarError as exc:
                raise DownloadError(f"{archive.name} could not be unpacked safely ({exc})") from None
            archive.unlink()
        staging.rename(base / PETS)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sort_by_species(pets: Path, target: Path) -> None:
    """Links to each listed image under train/ (trainval.txt) or test/ (test.txt), in cat/ or dog/
    by the species column; built beside ``target`` and renamed into place."""
    staging = target.parent / f".{target.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for split, listing in LISTINGS:
            path = pets / "annotations" / listing
            for number, line in enumerate(path.read_text().splitlines(), 1):
                fields = line.split()
                if not fields or line.startswith("#"):
                    continue
                name = fields[0]
                if len(fields) < 3 or fields[2] not in SPECIES or Path(name).name != name or name.startswith(".") \
                        or "\x00" in name:
                    raise ValueError(f"{path} line {number} is not 'NAME CLASS-ID SPECIES BREED-ID' with a plain file "
                                     f"name and species 1 (cat) or 2 (dog): {line[:80]!r}")
                folder = staging / split / SPECIES[fields[2]]
                folder.mkdir(parents=True, exist_ok=True)
                link = folder / f"{name}.jpg"
                if not link.is_symlink():  # an image listed twice
                    link.symlink_to((pets / "images" / f"{name}.jpg").resolve())
        if not (staging / "train").is_dir():
            raise ValueError(f"{pets / 'annotations' / LISTINGS[0][1]} lists no images (lines 'NAME CLASS-ID SPECIES "
                             "BREED-ID' with species 1 (cat) or 2 (dog))")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
