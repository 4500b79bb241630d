"""Taking images from a browser into a project's data folder: a zip, or files with the relative
paths of the folders they were dropped in.

Everything arriving is untrusted. An upload is written into a hidden staging folder beside its
destination and renamed into place only when every file passed, so a refused upload leaves
nothing behind and nothing half-written, and nothing is ever written outside the data folder.
Refused, with the reason and the entry named:

- a path that leaves the folder (``..``, an absolute path, a drive letter: "zip-slip");
- a link, device or pipe inside a zip, and encrypted entries;
- a zip bomb: an entry that expands more than ``max_ratio`` times its compressed size, or an
  archive that does; sizes are counted as the bytes come out, never read from the zip's headers;
- more than ``max_files`` files, ``max_total_bytes`` bytes or the disk quota that is left;
- a file that is not an image: a suffix other than an image's, 0 bytes, or content Pillow
  cannot decode (only the formats of :data:`IMAGE_FORMATS`: no plugin that calls out to other
  programs), and an image of more than ``max_pixels`` pixels (or Pillow's decompression-bomb
  limit), checked from its header before it is decoded.

Files that operating systems add to archives (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``) are
left out and listed in the summary.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from nodeflow.executor import format_bytes

#: the suffixes the dataset loader reads (nodes/engine/images.py; a test keeps them equal)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: the Pillow formats those files may be in (JPEG opens the MPO variant phone cameras write too)
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
#: the split folders the dataset loader knows (nodes/engine/images.py): their sub-folders are the classes
SPLIT_NAMES = {"train", "training", "validation", "val", "valid", "test", "testing"}
JUNK_FOLDERS = {"__MACOSX"}
STAGING_PREFIX = ".upload-"
CHUNK = 64 * 1024
#: ratios are judged only past this many bytes: a small, plain image can compress very well
RATIO_FLOOR = 1024 * 1024
MAX_DEPTH = 32
UPLOAD_NAME = re.compile(r"\w(?:[\w .-]{0,62}[\w-])?")
DRIVE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class UploadLimits:
    max_total_bytes: int = 2 * 2**30
    max_files: int = 20_000
    max_pixels: int = 40_000_000
    #: uncompressed bytes per compressed byte, for each zip entry and for the whole archive
    max_ratio: float = 200.0
    #: what the user's disk quota has left (``DiskQuota.left``), None for no quota
    quota_left: int | None = None


class UploadRefused(ValueError):
    """Why an upload was refused; ``entry`` is the file or zip entry at fault, ``limit`` the
    :class:`UploadLimits` field that was hit. Nothing of the upload was kept."""

    def __init__(self, reason: str, entry: str | None = None, limit: str | None = None) -> None:
        self.reason, self.entry, self.limit = reason, entry, limit
        where = f"'{_shown(entry)}': " if entry is not None else ""
        super().__init__(f"upload refused: {where}{reason}; nothing was saved")


@dataclass(frozen=True)
class UploadSummary:
    #: the new folder's name in the data folder, and its path
    folder: str
    path: Path
    images: int
    bytes: int
    #: top-level folder (a class) -> the images under it
    classes: dict[str, int]
    #: images directly in the folder, in no class folder
    loose: int
    #: files left out as operating-system litter
    skipped: list[str] = field(default_factory=list)


def receive_zip(source: BinaryIO | Path, data_dir: Path, name: str,
                limits: UploadLimits = UploadLimits()) -> UploadSummary:
    """Unpack the zip ``source`` (a path or a seekable binary file) into ``data_dir/name``."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise UploadRefused(f"not a readable zip file ({exc})") from None
    with archive, _Staging(data_dir, name, limits) as staging:
        entries = archive.infolist()
        files = [e for e in entries if not _is_folder(e) and not _junk(_parts(e.filename))]
        if len(files) > limits.max_files:
            raise UploadRefused(f"the zip holds {len(files):,} files, more than max_files = {limits.max_files:,}",
                                limit="max_files")
        archive_size = _size_of(source)
        for entry in entries:
            _check_entry(entry)
            if _is_folder(entry):
                _safe_parts(entry.filename)
                continue
            staging.add(entry.filename, _inflate(archive, entry, limits, staging, archive_size))
        return staging.commit()


def receive_files(files: Iterable[tuple[str, BinaryIO]], data_dir: Path, name: str,
                  limits: UploadLimits = UploadLimits()) -> UploadSummary:
    """Save dropped files into ``data_dir/name``; each comes with its path relative to the
    dropped folder (a browser's ``webkitRelativePath``), e.g. ``PetImages/Cat/1.jpg``."""
    with _Staging(data_dir, name, limits) as staging:
        for relative, handle in files:
            staging.add(relative, iter(lambda h=handle: h.read(CHUNK), b""))
        return staging.commit()


def remove_leftovers(data_dir: Path) -> list[Path]:
    """Staging folders an upload left when its process was killed mid-way (at server start)."""
    gone = [p for p in Path(data_dir).glob(f"{STAGING_PREFIX}*") if p.is_dir() and not p.is_symlink()]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


# -- paths --------------------------------------------------------------------------------------------


def _shown(text: str) -> str:
    """An entry name as a message may quote it: no control characters, not too long."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= 120 else cleaned[:117] + "..."


def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]


def _junk(parts: list[str]) -> bool:
    return bool(parts) and (parts[0] in JUNK_FOLDERS or parts[-1] in JUNK_NAMES or parts[-1].startswith("._"))


def _safe_parts(name: str) -> list[str]:
    """The path components of an entry name, or a refusal when it could land outside the folder.
    Backslashes count as separators: a zip made on Windows may use them."""
    if name.startswith(("/", "\\")):
        raise UploadRefused("an absolute path leaves the upload folder (zip-slip)", name)
    parts = _parts(name)
    if parts and DRIVE.match(parts[0]):
        raise UploadRefused("a path with a drive letter leaves the upload folder (zip-slip)", name)
    if ".." in parts:
        raise UploadRefused("a path with '..' leaves the upload folder (zip-slip)", name)
    if not parts:
        raise UploadRefused("an entry without a file name", name)
    if len(parts) > MAX_DEPTH:
        raise UploadRefused(f"folders nested more than {MAX_DEPTH} deep", name)
    for part in parts:
        if not part.isprintable():
            raise UploadRefused("a name with control characters", name)
        if len(part.encode("utf-8", "surrogatepass")) > 255:
            raise UploadRefused("a name longer than 255 bytes", name)
    return parts


def _is_folder(entry: zipfile.ZipInfo) -> bool:
    """A folder entry (zipfile's own ``is_dir`` fails on a name that is empty: one starting with NUL)."""
    return entry.filename.endswith(("/", "\\"))


def _check_entry(entry: zipfile.ZipInfo) -> None:
    mode = entry.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UploadRefused("a link inside the zip (links could point anywhere)", entry.filename)
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UploadRefused("not a regular file (a device or a pipe)", entry.filename)
    if entry.flag_bits & 0x1:
        raise UploadRefused("an encrypted entry", entry.filename)


def _size_of(source: BinaryIO | Path) -> int:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)
    here = source.tell()
    end = source.seek(0, os.SEEK_END)
    source.seek(here)
    return end


def _inflate(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, limits: UploadLimits, staging: _Staging,
             archive_size: int) -> Iterator[bytes]:
    """The entry's bytes as they decompress, stopped as soon as it or the archive so far expands
    more than ``max_ratio`` times (the header's sizes may lie; these are the bytes that came out)."""
    produced, before = 0, staging.bytes
    try:
        with archive.open(entry) as stream:
            while chunk := stream.read(CHUNK):
                produced += len(chunk)
                if produced > RATIO_FLOOR and produced > limits.max_ratio * max(entry.compress_size, 1):
                    raise UploadRefused(f"it expands more than max_ratio = {limits.max_ratio:g} times its "
                                        "compressed size (a zip bomb?)", entry.filename, "max_ratio")
                so_far = before + produced
                if so_far > RATIO_FLOOR and so_far > limits.max_ratio * max(archive_size, 1):
                    raise UploadRefused(f"the zip expands more than max_ratio = {limits.max_ratio:g} times its "
                                        "size (a zip bomb?)", entry.filename, "max_ratio")
                yield chunk
    except UploadRefused:
        raise
    except EOFError:
        raise UploadRefused("cannot be unpacked (the zip ends before this entry does)", entry.filename) from None
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, ValueError, RuntimeError) as exc:
        raise UploadRefused(f"cannot be unpacked ({exc or type(exc).__name__})", entry.filename) from None


# -- staging ------------------------------------------------------------------------------------------


class _Staging:
    """A hidden folder beside the destination that receives the files; renamed into place when
    all of them passed, removed whole otherwise."""

    def __init__(self, data_dir: Path, name: str, limits: UploadLimits) -> None:
        if not isinstance(name, str) or not UPLOAD_NAME.fullmatch(name.strip()):
            raise UploadRefused(f"the folder name {_shown(str(name))!r} is not allowed: use 1 to 64 letters, digits, "
                                "spaces and . _ - (not starting with a dot)")
        self.name = name.strip()
        self.limits = limits
        self.final = Path(data_dir) / self.name
        if os.path.lexists(self.final):
            raise UploadRefused(f"the data folder already has '{self.name}'; choose another name")
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_dir))
        self.files = 0
        self.bytes = 0
        self.skipped: list[str] = []

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)  # after commit it is empty or gone

    def add(self, name: str, chunks: Iterator[bytes]) -> None:
        if not isinstance(name, str):
            raise UploadRefused("a file without a usable name")
        parts = _safe_parts(name)
        if _junk(parts):
            self.skipped.append(_shown(name))
            return
        if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            raise UploadRefused(f"not an image file (images end in {', '.join(sorted(IMAGE_SUFFIXES))})", name)
        self.files += 1
        if self.files > self.limits.max_files:
            raise UploadRefused(f"more than max_files = {self.limits.max_files:,} files", name, "max_files")
        target = self.dir.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file already has the name of a folder this path needs
            raise UploadRefused(f"its folder cannot be made ({exc.strerror or exc})", name) from None
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            raise UploadRefused("the same path appears twice", name) from None
        except OSError as exc:  # a name this file system refuses
            raise UploadRefused(f"cannot be saved here ({exc.strerror or exc})", name) from None
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                self._count(len(chunk), name)
                out.write(chunk)
        if size == 0:
            raise UploadRefused("an empty file (0 bytes) is not an image", name)
        check_image(target, name, self.limits.max_pixels)

    def _count(self, nbytes: int, name: str) -> None:
        self.bytes += nbytes
        if self.bytes > self.limits.max_total_bytes:
            raise UploadRefused(f"the upload is larger than max_total_bytes = {format_bytes(self.limits.max_total_bytes)}",
                                name, "max_total_bytes")
        if self.limits.quota_left is not None and self.bytes > self.limits.quota_left:
            raise UploadRefused(f"the upload is larger than what your disk quota has left "
                                f"({format_bytes(self.limits.quota_left) if self.limits.quota_left else 'nothing'})",
                                name, "quota_left")

    def commit(self) -> UploadSummary:
        if self.files == 0:
            raise UploadRefused("no image files in the upload")
        base = self.dir
        inside = list(base.iterdir())
        if len(inside) == 1 and inside[0].is_dir() and any(p.is_dir() for p in inside[0].iterdir()):
            base = inside[0]  # one wrapping folder (PetImages/Cat, PetImages/Dog): its classes are the classes
        classes = {p.name: sum(1 for f in p.rglob("*") if f.is_file()) for p in sorted(base.iterdir()) if p.is_dir()}
        if classes and {name.lower() for name in classes} <= SPLIT_NAMES:  # train/ validation/ test/, classes inside
            classes = {}
            for split in sorted(p for p in base.iterdir() if p.is_dir()):
                for folder in sorted(p for p in split.iterdir() if p.is_dir()):
                    classes[folder.name] = classes.get(folder.name, 0) + sum(1 for f in folder.rglob("*") if f.is_file())
        loose = sum(1 for p in base.iterdir() if p.is_file())
        try:
            os.rename(base, self.final)
        except OSError:
            raise UploadRefused(f"the data folder already has '{self.name}'; choose another name") from None
        return UploadSummary(self.name, self.final, self.files, self.bytes, classes, loose, self.skipped)


def check_image(path: Path, name: str, max_pixels: int) -> None:
    """Refuse a file that is not an image Pillow can decode whole, or one with too many pixels
    (judged from its header, before its pixels are decoded)."""
    bomb_limit = Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UploadRefused(f"{width}×{height} = {width * height:,} pixels, more than max_pixels = "
                                    f"{max_pixels:,}", name, "max_pixels")
            if bomb_limit and width * height > bomb_limit:
                raise UploadRefused(f"{width}×{height} pixels, more than Pillow's decompression-bomb limit "
                                    f"({bomb_limit:,})", name, "max_pixels")
            image.load()
    except UploadRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadRefused(f"more pixels than Pillow's decompression-bomb limit ({exc})", name, "max_pixels") from None
    except Exception as exc:  # Pillow's decoders raise many kinds of error on damaged data
        reason = str(exc).replace(f"'{path}'", "").replace(str(path), "")  # where it was staged says nothing
        raise UploadRefused(f"not a readable image ({type(exc).__name__}: {_shown(reason.strip())})", name) from None
