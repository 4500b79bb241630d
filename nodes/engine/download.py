"""One downloader for everything nodeflow fetches (pretrained weights, public data sets).

A file is streamed into a temporary file beside its target, checked against the digest its
publisher gives (the SHA-256 prefix in a torchvision weights file's name, a data set's MD5), and
only then renamed into place: a timeout, a dropped connection, a short body or a wrong digest
leaves nothing behind. ``NODEFLOW_MIRROR_URL`` points every download at a server of one's own
(an artifact server in an offline lab or class): the file name is appended to that base URL.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

MIRROR_ENV = "NODEFLOW_MIRROR_URL"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched, or what came was not the published file; nothing was kept."""


def file_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]


def source_url(url: str) -> str:
    """Where ``url`` is fetched from: the mirror's base URL plus the file name when
    ``NODEFLOW_MIRROR_URL`` is set, else ``url`` itself."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return url
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{MIRROR_ENV} must be an http:// or https:// URL of the folder that holds the files "
                            f"(got {base!r})")
    return f"{base.rstrip('/')}/{urllib.parse.quote(file_name(url))}"


def download(url: str, target: Path, algorithm: str, digest: str, timeout: float,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Fetch ``url`` into ``target`` once its ``algorithm`` hex digest begins with ``digest`` (a full
    digest or a published prefix). ``timeout`` bounds each wait for the server, in seconds;
    ``progress(bytes_so_far, total)`` is called per chunk (total 0 when the server does not say)."""
    if not digest:
        raise DownloadError(f"no checksum is published for {file_name(url)}, so a download could not be verified")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        hasher = hashlib.new(algorithm)
        with os.fdopen(fd, "wb") as out:
            received, total = _stream(url, timeout, out, hasher, progress)
            if total and received != total:
                raise DownloadError(f"the connection to {url} closed after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        found = hasher.hexdigest()
        if not found.startswith(digest.lower()):
            raise DownloadError(f"{url} is not the published {target.name}: its {algorithm.upper()} is "
                                f"{found[:max(len(digest), 8)]}..., the publisher's begins {digest}; it was not kept")
        os.replace(tmp, target)
        return target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stream(url: str, timeout: float, out, hasher, progress) -> tuple[int, int]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                if progress:
                    progress(received, total)
            return received, total
    except TimeoutError:
        raise DownloadError(f"{url} did not answer within {timeout:g} s") from None
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url} answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise DownloadError(f"{url} did not answer within {timeout:g} s") from None
        raise DownloadError(f"could not reach {url} ({exc.reason})") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise DownloadError(f"the download of {url} failed ({type(exc).__name__}: {exc})") from None
