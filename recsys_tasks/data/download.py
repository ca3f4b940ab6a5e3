"""``recsys data download``: fetch an official MovieLens archive, check it, unpack it.

Only for machines with internet access; the loaders never touch the network. The archive is
streamed to a temporary file, its MD5 compared with the checksum GroupLens publishes, and only
then unpacked (into a temporary folder renamed into place), so a failed or tampered download
leaves nothing behind that a loader could pick up.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from recsys_tasks.errors import ConfigError, InputDataError

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    file_name: str
    md5: str
    folder: str  # the folder the archive unpacks to, which the matching loader reads


ARCHIVES = {
    "movielens-100k": Archive("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k"),
    "movielens-1m": Archive("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m"),
    "movielens-25m": Archive("ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", "ml-25m"),
}


def download(name: str, destination: Path, base_url: str = GROUPLENS_URL) -> Path:
    """Download data set ``name`` into ``destination``; return the folder to pass as data_path."""
    if name not in ARCHIVES:
        raise ConfigError(f"unknown data set {name!r}: choose one of {', '.join(ARCHIVES)}")
    archive = ARCHIVES[name]
    return fetch_and_unpack(f"{base_url.rstrip('/')}/{archive.file_name}", archive.md5, archive.folder, destination)


def fetch_and_unpack(url: str, md5: str, folder: str, destination: Path, timeout: float = 60) -> Path:
    target = destination / folder
    if target.is_dir():
        return target
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".download-") as scratch:
        zipped = Path(scratch) / "archive.zip"
        digest = _fetch(url, zipped, timeout)
        if digest != md5:
            raise InputDataError(
                f"{url} has MD5 {digest}, expected {md5}: the download is corrupt or the file changed; "
                "nothing was unpacked"
            )
        unpacked = Path(scratch) / "unpacked"
        _safe_extract(zipped, unpacked, url)
        if not (unpacked / folder).is_dir():
            raise InputDataError(f"{url} does not contain the folder {folder}/")
        shutil.move(str(unpacked / folder), target)
    return target


def _fetch(url: str, path: Path, timeout: float) -> str:
    """Stream ``url`` to ``path`` with a progress bar; return the MD5 of what arrived."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
            size = int(response.headers.get("Content-Length") or 0) or None
            columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=size)
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise InputDataError(f"could not download {url}: {getattr(exc, 'reason', exc)}") from None
    return digest.hexdigest()


def _safe_extract(zipped: Path, into: Path, url: str) -> None:
    """Unpack, refusing members that would land outside ``into`` (zip-slip)."""
    try:
        with zipfile.ZipFile(zipped) as archive:
            for member in archive.namelist():
                if not (into / member).resolve().is_relative_to(into.resolve()):
                    raise InputDataError(f"{url} holds a file outside its folder ({member}); refusing to unpack")
            archive.extractall(into)
    except zipfile.BadZipFile:
        raise InputDataError(f"{url} is not a zip archive") from None
