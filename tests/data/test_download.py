"""Downloading an archive over real HTTP (a server on loopback): checked, unpacked, or refused whole."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from recsys_tasks.data.download import ARCHIVES, download, fetch_and_unpack
from recsys_tasks.data.sources import read_movielens_100k
from recsys_tasks.errors import ConfigError, InputDataError


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def movielens_zip(path: Path, members: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


GENRES = "|".join(["0"] * 19)
ML_FILES = {"ml-100k/u.data": "1\t10\t5\t881250949\n", "ml-100k/u.item": f"10|Film|01-Jan-1995||http://x|{GENRES}\n"}


def test_a_checked_archive_is_unpacked_where_the_loader_reads_it(served, tmp_path):
    folder, base_url = served
    md5 = movielens_zip(folder / "ml-100k.zip", ML_FILES)

    unpacked = fetch_and_unpack(f"{base_url}/ml-100k.zip", md5, "ml-100k", tmp_path / "data")

    assert unpacked == tmp_path / "data" / "ml-100k"
    assert read_movielens_100k(str(unpacked))[0].num_rows == 1
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["ml-100k"]  # no temporary leftovers


def test_the_published_checksum_is_enforced(served, tmp_path):
    folder, base_url = served
    movielens_zip(folder / "ml-100k.zip", ML_FILES)  # not the official archive: its MD5 differs
    with pytest.raises(InputDataError, match=f"expected {ARCHIVES['movielens-100k'].md5}"):
        download("movielens-100k", tmp_path / "data", base_url)
    assert not (tmp_path / "data" / "ml-100k").exists() and list((tmp_path / "data").iterdir()) == []


def test_a_missing_file_and_an_unknown_name_are_one_clear_line(served, tmp_path):
    _, base_url = served
    with pytest.raises(InputDataError, match="could not download .*ml-1m.zip"):
        download("movielens-1m", tmp_path / "data", base_url)
    with pytest.raises(ConfigError, match="choose one of movielens-100k, movielens-1m, movielens-25m"):
        download("netflix-prize", tmp_path / "data", base_url)


def test_an_archive_escaping_its_folder_is_refused(served, tmp_path):
    folder, base_url = served
    md5 = movielens_zip(folder / "evil.zip", {"ml-100k/u.data": "", "../../outside.txt": "x"})
    with pytest.raises(InputDataError, match="outside its folder"):
        fetch_and_unpack(f"{base_url}/evil.zip", md5, "ml-100k", tmp_path / "data")
    assert not (tmp_path / "outside.txt").exists()
