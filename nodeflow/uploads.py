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

A browser's upload (:class:`MultipartUpload`) is taken in as its bytes arrive: each file goes
straight into the staging folder, its bytes counted against the limits and the disk quota's
reservation (:meth:`nodeflow.users.quota.DiskQuota.reserve`) before they are written, so nothing
is spooled elsewhere (no temporary files) and the staging folder never holds more than the quota
has left; a zip is kept there whole until it is unpacked beside it.
"""

from __future__ import annotations

import codecs
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
from typing import Any, BinaryIO

from PIL import Image

try:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # python-multipart before 0.0.13 names its module multipart
    from multipart.exceptions import FormParserError
    from multipart.multipart import MultipartParser, parse_options_header

from nodeflow.words import format_bytes
from nodeflow.users.quota import QuotaExceeded, Reservation

#: the suffixes the dataset loader reads (nodes/engine/folders.py; a test keeps them equal)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: the Pillow formats those files may be in (JPEG opens the MPO variant phone cameras write too)
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
#: the split folders the dataset loader knows (nodes/engine/folders.py; a test keeps them equal): their
#: sub-folders are the classes
SPLIT_NAMES = {"train", "training", "validation", "val", "valid", "test", "testing"}
JUNK_FOLDERS = {"__MACOSX"}
STAGING_PREFIX = ".upload-"
CHUNK = 64 * 1024
#: ratios are judged only past this many bytes: a small, plain image can compress very well
RATIO_FLOOR = 1024 * 1024
MAX_DEPTH = 32
UPLOAD_NAME = re.compile(r"\w(?:[\w .-]{0,62}[\w-])?")
DRIVE = re.compile(r"[A-Za-z]:")
#: a multipart body's own parts (field names, boundaries) on top of the files' bytes
MULTIPART_SLACK = 1024 * 1024
#: the form field whose files are the upload; other fields are read past, at most MAX_FIELDS of them
FILES_FIELD = "files"
MAX_FIELDS = 4
#: the characters of a form field's value that an upload keeps (``MultipartUpload.values``)
FIELD_CHARS = 200


@dataclass(frozen=True)
class UploadLimits:
    max_total_bytes: int = 2 * 2**30
    max_files: int = 20_000
    max_pixels: int = 40_000_000
    #: uncompressed bytes per compressed byte, for each zip entry and for the whole archive
    max_ratio: float = 200.0
    #: a fixed figure of what the disk quota has left, None for none; a shared server counts uploads
    #: against the quota as they arrive instead, with a reservation (``DiskQuota.reserve``)
    quota_left: int | None = None


class UploadRefused(ValueError):
    """Why an upload was refused; ``entry`` is the file or zip entry at fault, ``limit`` the
    :class:`UploadLimits` field that was hit (or ``quota``, ``quota_left``, ``uploads_at_once``,
    ``name``). Nothing of the upload was kept. ``about_files`` is False for a refusal of the
    request as a whole (its size, its form, its admission), whose answer names the limit only."""

    def __init__(self, reason: str, entry: str | None = None, limit: str | None = None, *,
                 message: str | None = None, about_files: bool = True) -> None:
        self.reason, self.entry, self.limit, self.about_files = reason, entry, limit, about_files
        where = f"'{_shown(entry)}': " if entry is not None else ""
        super().__init__(message or f"upload refused: {where}{reason}; nothing was saved")

    def detail(self) -> dict[str, Any]:
        """The refusal as an answer's detail: its message and the limit hit, and for a refusal of
        one of its files the reason and the file."""
        if self.about_files:
            return {"message": str(self), "reason": self.reason, "entry": self.entry, "limit": self.limit}
        return {"message": str(self), **({"limit": self.limit} if self.limit else {})}


class NameTaken(UploadRefused):
    """The data folder has the name already (asked for without taking a free one)."""


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


def receive_zip(source: BinaryIO | Path, data_dir: Path, name: str, limits: UploadLimits = UploadLimits(),
                reservation: Reservation | None = None) -> UploadSummary:
    """Unpack the zip ``source`` (a path or a seekable binary file) into ``data_dir/name``; its
    bytes count against ``reservation`` (a disk quota's) as they come out."""
    archive = _open_zip(source)
    with archive, _Staging(data_dir, name, limits, reservation) as staging:
        _unzip(archive, staging, _size_of(source))
        return staging.commit()


def receive_files(files: Iterable[tuple[str, BinaryIO]], data_dir: Path, name: str,
                  limits: UploadLimits = UploadLimits(), reservation: Reservation | None = None) -> UploadSummary:
    """Save dropped files into ``data_dir/name``; each comes with its path relative to the
    dropped folder (a browser's ``webkitRelativePath``), e.g. ``PetImages/Cat/1.jpg``."""
    with _Staging(data_dir, name, limits, reservation) as staging:
        for relative, handle in files:
            staging.add(relative, iter(lambda h=handle: h.read(CHUNK), b""))
        return staging.commit()


class MultipartUpload:
    """An upload arriving as a multipart/form-data body (a browser's form: one .zip, or image files
    named by their paths, in the field ``files``), taken in as its bytes arrive. Each file's bytes
    go straight into the staging folder, counted against the limits and ``reservation`` before they
    are written, so nothing is spooled anywhere else and the first byte too many refuses the upload.
    :meth:`feed` each chunk of the body as it comes, then :meth:`finish` (the images are decoded,
    a zip unpacked, and the folder moved into place); :meth:`close` whatever happened: it removes
    what a refused or abandoned upload left and ends the reservation.

    Raises :class:`UploadRefused` (from any of them), with the reason."""

    def __init__(self, content_type: str, data_dir: Path, name: str, limits: UploadLimits = UploadLimits(),
                 reservation: Reservation | None = None, files_field: str = FILES_FIELD) -> None:
        _, params = parse_options_header(content_type)
        charset = params.get(b"charset", b"utf-8").decode("latin-1")
        try:
            self.charset = codecs.lookup(charset).name
        except LookupError:
            self.charset = "latin-1"
        boundary = params.get(b"boundary")
        if not boundary:
            raise _unreadable("Missing boundary in multipart.")
        try:
            self.parser = MultipartParser(boundary, {
                "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
                "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
                "on_end": self._end})
        except (FormParserError, ValueError):
            raise _unreadable("Invalid multipart data.") from None
        self.limits = limits
        self.reservation = reservation
        self.staging = _Staging(data_dir, name, limits, reservation)
        #: body bytes so far; parts that are files (any field), form fields; files in the field 'files'
        self.body = self.parts = self.fields = self.given = 0
        self.part = _Part()
        #: the one zip of a zip upload, kept whole in the staging folder until it is unpacked
        self.archive: str | None = None
        #: the files written so far (name, where), decoded when the body has ended
        self.received: list[tuple[str, Path]] = []
        self.ended = False
        #: the field whose files are the upload
        self.files_field = files_field
        #: the form fields' values (their first FIELD_CHARS characters), by name
        self.values: dict[str, str] = {}
        self._value: tuple[str, bytearray] | None = None

    @property
    def folder(self) -> str:
        return self.staging.name

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the body."""
        self.body += len(chunk)
        if self.body > self.limits.max_total_bytes + MULTIPART_SLACK:
            raise UploadRefused(f"larger than max_total_bytes = {format_bytes(self.limits.max_total_bytes)}",
                                limit="max_total_bytes", about_files=False)
        try:
            self.parser.write(chunk)
        except FormParserError:
            raise _unreadable("Invalid multipart data.") from None

    def finish(self) -> UploadSummary:
        """After the body's last byte: decode every image (or unpack the zip) and move the folder
        into place."""
        if not self.ended:
            raise _unreadable("the body ends before its closing boundary")
        if self.given == 0:
            raise UploadRefused(f"no files in the field '{self.files_field}'", about_files=False)
        if self.archive is not None:
            spooled = self.staging.spooled
            with _open_zip(spooled) as archive:
                _unzip(archive, self.staging, spooled.stat().st_size)
            self.staging.unspool()
        else:
            for name, path in self.received:
                check_image(path, name, self.limits.max_pixels)
        return self.staging.commit()

    def close(self) -> None:
        """Remove what is left of the upload (nothing after it was kept) and end its reservation."""
        if self.part.writer is not None:
            self.part.writer.discard()
            self.part.writer = None
        self.staging.close()
        if self.reservation is not None:
            self.reservation.release()

    def __enter__(self) -> MultipartUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the parser's callbacks, in the order of the body ---------------------------------------------
    def _part_begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def _header_end(self) -> None:
        if self.part.header_name.lower() == b"content-disposition":
            self.part.disposition = self.part.header_value
        self.part.header_name = self.part.header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.part.disposition)
        if b"name" not in options:
            raise _unreadable('The Content-Disposition header field "name" must be provided.')
        if b"filename" not in options:  # a form field: its first characters are kept
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise _unreadable(f"Too many fields. Maximum number of fields is {MAX_FIELDS}.")
            self._value = (_decoded(options[b"name"], self.charset), bytearray())
            return
        self.parts += 1
        if self.parts > self.limits.max_files + 1:  # the images among them are counted as they are saved
            raise UploadRefused(f"more than max_files = {self.limits.max_files:,} files", limit="max_files",
                                about_files=False)
        if _decoded(options[b"name"], self.charset) != self.files_field:
            return
        filename = _decoded(options[b"filename"], self.charset)
        self.given += 1
        if self.archive is not None:  # a zip and more files: the zip is one of the files, and no image
            self.staging.add(self.archive, iter(()))  # refused, or left out as system litter
            self.staging.unspool()
            self.archive = None
        if self.given == 1 and filename.lower().endswith(".zip"):
            self.archive = filename
            self.part.writer = self.staging.spool(filename)
        else:
            self.part.writer = self.staging.open(filename)  # None: system litter, left out

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.writer is not None:
            self.part.writer.write(data[start:end])
        elif self._value is not None and len(self._value[1]) < 4 * FIELD_CHARS:
            self._value[1].extend(data[start:min(end, start + 4 * FIELD_CHARS)])

    def _part_end(self) -> None:
        if self._value is not None:
            name, raw = self._value
            self.values[name] = raw.decode(self.charset, "replace")[:FIELD_CHARS]
            self._value = None
        writer, self.part.writer = self.part.writer, None
        if writer is not None:
            path = writer.close()
            if not writer.spool:
                self.received.append((writer.name, path))

    def _end(self) -> None:
        self.ended = True


def upload_folder(data_dir: Path, name: str) -> Path:
    """An uploaded folder of the data folder by name (LookupError for one that is not there)."""
    if not isinstance(name, str) or not UPLOAD_NAME.fullmatch(name) or name.startswith("."):
        raise LookupError(f"no uploaded folder '{str(name)[:64]}'")
    folder = Path(data_dir) / name
    if folder.is_symlink() or not folder.is_dir():
        raise LookupError(f"no uploaded folder '{name[:64]}'")
    return folder


def free_name(data_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... whichever the data folder does not have yet."""
    data = Path(data_dir)
    candidate, n = name, 1
    while (data / candidate).exists() or (data / candidate).is_symlink():
        n += 1
        suffix = f"-{n}"
        candidate = name[:64 - len(suffix)].rstrip(" .") + suffix
    return candidate


def remove_leftovers(data_dir: Path) -> list[Path]:
    """Staging folders an upload left when its process was killed mid-way (at server start)."""
    gone = [p for p in Path(data_dir).glob(f"{STAGING_PREFIX}*") if p.is_dir() and not p.is_symlink()]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


# -- paths --------------------------------------------------------------------------------------------


def _unreadable(why: str) -> UploadRefused:
    return UploadRefused(f"not a readable multipart body ({why})", about_files=False,
                         message=f"upload refused: not a readable multipart body ({why})")


def _decoded(raw: bytes, charset: str) -> str:
    """A name from a part's header, in the body's charset (Latin-1 when it is not that)."""
    try:
        return raw.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return raw.decode("latin-1")


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


def _open_zip(source: BinaryIO | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise UploadRefused(f"not a readable zip file ({exc})") from None


def _unzip(archive: zipfile.ZipFile, staging: _Staging, archive_size: int) -> None:
    """Every entry of ``archive`` into ``staging``, each checked (see the module's list)."""
    limits = staging.limits
    entries = archive.infolist()
    files = [e for e in entries if not _is_folder(e) and not _junk(_parts(e.filename))]
    if len(files) > limits.max_files:
        raise UploadRefused(f"the zip holds {len(files):,} files, more than max_files = {limits.max_files:,}",
                            limit="max_files")
    for entry in entries:
        _check_entry(entry)
        if _is_folder(entry):
            _safe_parts(entry.filename)
            continue
        staging.add(entry.filename, _inflate(archive, entry, limits, staging, archive_size))


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


@dataclass
class _Part:
    """The part of a multipart body being read: its headers so far, and where its bytes go."""
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    writer: _StagedFile | None = None


class _Staging:
    """A hidden folder beside the destination that receives the files (and a zip upload whole,
    until it is unpacked); its files are renamed into place when all of them passed, and it is
    removed whole otherwise. Every byte is counted before it is written: against the limits and,
    with a ``reservation``, against the disk quota."""

    def __init__(self, data_dir: Path, name: str, limits: UploadLimits, reservation: Reservation | None = None) -> None:
        if not isinstance(name, str) or not UPLOAD_NAME.fullmatch(name.strip()):
            raise UploadRefused(f"the folder name {_shown(str(name))!r} is not allowed: use 1 to 64 letters, digits, "
                                "spaces and . _ - (not starting with a dot)")
        self.name = name.strip()
        self.limits = limits
        self.reservation = reservation
        self.final = Path(data_dir) / self.name
        if os.path.lexists(self.final):
            raise UploadRefused(f"the data folder already has '{self.name}'; choose another name")
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_dir))
        if reservation is not None:  # what is in it is counted by the reservation, not measured
            reservation.folder = self.root
        self.dir = self.root / "files"
        self.dir.mkdir()
        #: where a zip upload is kept until it is unpacked
        self.spooled = self.root / "upload.zip"
        self.spooled_bytes = 0
        self.files = 0
        self.bytes = 0
        self.skipped: list[str] = []

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)  # after commit only what was left out is in it

    def open(self, name: str) -> _StagedFile | None:
        """A new file at the path ``name`` (checked), or None for system litter, left out."""
        if not isinstance(name, str):
            raise UploadRefused("a file without a usable name")
        parts = _safe_parts(name)
        if _junk(parts):
            self.skipped.append(_shown(name))
            return None
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
        return _StagedFile(self, name, target, fd)

    def add(self, name: str, chunks: Iterator[bytes]) -> None:
        """The file ``name`` with the bytes of ``chunks``, checked as an image."""
        staged = self.open(name)
        if staged is None:
            return
        try:
            for chunk in chunks:
                staged.write(chunk)
        finally:
            staged.discard()
        check_image(staged.close(), name, self.limits.max_pixels)

    def spool(self, name: str) -> _StagedFile:
        """Where a zip upload named ``name`` is kept whole until it is unpacked (:meth:`unspool`)."""
        fd = os.open(self.spooled, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        return _StagedFile(self, name, self.spooled, fd, spool=True)

    def unspool(self) -> None:
        """The zip upload was unpacked (or turned out to be one file of several): remove it."""
        self.spooled.unlink(missing_ok=True)
        if self.reservation is not None:
            self.reservation.give_back(self.spooled_bytes)
        self.spooled_bytes = 0

    def _count(self, nbytes: int, name: str, spool: bool = False) -> None:
        """Count ``nbytes`` about to be written for ``name`` (a zip kept whole counts against the
        disk quota only: what it holds counts against the limits as it comes out)."""
        if not spool:
            self.bytes += nbytes
            if self.bytes > self.limits.max_total_bytes:
                raise UploadRefused(f"the upload is larger than max_total_bytes = "
                                    f"{format_bytes(self.limits.max_total_bytes)}", name, "max_total_bytes")
            left = self.limits.quota_left
            if left is not None and self.bytes > left:
                raise UploadRefused(f"the upload is larger than what your disk quota has left "
                                    f"({format_bytes(left) if left else 'nothing'})", name, "quota_left")
        if self.reservation is not None:
            try:
                self.reservation.take(nbytes)
            except QuotaExceeded as exc:
                raise UploadRefused(str(exc), name, "quota_left") from None
        if spool:
            self.spooled_bytes += nbytes

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

        def move() -> None:
            try:
                os.rename(base, self.final)
            except OSError:
                raise UploadRefused(f"the data folder already has '{self.name}'; choose another name") from None

        if self.reservation is not None:  # the bytes become usage as the folder lands
            self.reservation.settle(self.bytes, move)
        else:
            move()
        return UploadSummary(self.name, self.final, self.files, self.bytes, classes, loose, self.skipped)


class _StagedFile:
    """One file being written into the staging folder, each chunk counted before it is written."""

    def __init__(self, staging: _Staging, name: str, path: Path, fd: int, spool: bool = False) -> None:
        self.staging, self.name, self.path, self.spool = staging, name, path, spool
        self.out: BinaryIO | None = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        assert self.out is not None, "written after it was closed"
        self.staging._count(len(chunk), self.name, self.spool)
        self.out.write(chunk)
        self.size += len(chunk)

    def discard(self) -> None:
        """Close the file, whatever happened (the staging folder goes with it on a refusal)."""
        if self.out is not None:
            self.out.close()
            self.out = None

    def close(self) -> Path:
        """The file is whole: where it is (a 0-byte image is refused)."""
        self.discard()
        if self.size == 0 and not self.spool:
            raise UploadRefused("an empty file (0 bytes) is not an image", self.name)
        return self.path


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
