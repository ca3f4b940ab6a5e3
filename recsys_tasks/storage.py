"""Run directories: every artifact of one pipeline run lives under one URI keyed by the run id.

Writes are atomic so that a retried Airflow task never reads half a file: on a local disk the
data goes to a temporary sibling and is renamed into place; on object stores (s3://, gs://, ...)
a single object upload is already all-or-nothing, and folders are uploaded before the small
``_SUCCESS`` marker that readers check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_tasks.errors import InputDataError

_SUCCESS = "_SUCCESS"


def run_key(run_id: str) -> str:
    """Airflow run ids contain ':' and '+'; keep a readable, filesystem-safe key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_") or "run"


class RunDir:
    """A folder (local path or fsspec URI) holding the artifacts of one pipeline run."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self._root = fsspec.core.url_to_fs(self.uri)
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol
        self.is_local = bool({"file", "local"} & set(protocols))

    @classmethod
    def for_run(cls, runs_uri: str, run_id: str) -> RunDir:
        return cls(f"{runs_uri.rstrip('/')}/{run_key(run_id)}")

    def path(self, name: str) -> str:
        return f"{self._root}/{name}"

    def uri_of(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    @contextmanager
    def _atomic_writer(self, name: str) -> Iterator[BinaryIO]:
        """A binary file handle whose content appears under ``name`` only once it is complete."""
        target = self.path(name)
        if not self.is_local:
            with self.fs.open(target, "wb") as fh:
                yield fh
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as fh:
                yield fh
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def write_bytes(self, name: str, data: bytes) -> str:
        with self._atomic_writer(name) as fh:
            fh.write(data)
        return self.uri_of(name)

    def write_json(self, name: str, obj: Any) -> str:
        return self.write_bytes(name, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, name: str) -> Any:
        with self.fs.open(self.path(name), "rb") as fh:
            return json.load(fh)

    def write_text(self, name: str, text: str) -> str:
        return self.write_bytes(name, text.encode())

    def write_parquet(self, name: str, table: pa.Table) -> str:
        # Streamed into the file: no second in-memory copy of a large table.
        with self._atomic_writer(name) as fh:
            pq.write_table(table, fh, compression="zstd")
        return self.uri_of(name)

    def read_parquet(self, name: str) -> pa.Table:
        if not self.exists(name):
            raise InputDataError(f"{self.uri_of(name)} does not exist: run the stage that writes it first")
        with self.fs.open(self.path(name), "rb") as fh:
            return pq.read_table(fh)

    @contextmanager
    def writing_folder(self, name: str) -> Iterator[Path]:
        """Yield an empty local folder; on success publish it as ``name`` in one step."""
        staging = Path(tempfile.mkdtemp(prefix=f"adaptrec-{Path(name).name}-"))
        try:
            yield staging
            (staging / _SUCCESS).touch()
            target = self.path(name)
            if self.is_local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                moved = f"{target}.tmp-{uuid.uuid4().hex}"
                shutil.move(str(staging), moved)
                old = f"{target}.old-{uuid.uuid4().hex}"
                if os.path.exists(target):
                    os.replace(target, old)
                os.replace(moved, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                if self.fs.exists(target):
                    self.fs.rm(target, recursive=True)
                for file in sorted(staging.rglob("*"), key=lambda p: p.name == _SUCCESS):
                    if file.is_file():
                        self.fs.put_file(str(file), f"{target}/{file.relative_to(staging).as_posix()}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def scratch(self, name: str) -> Path:
        """A local folder that survives task retries on this worker (e.g. training checkpoints).

        Inside the run directory when that is local; otherwise under the system temp folder.
        """
        base = (
            Path(self._root) if self.is_local else Path(tempfile.gettempdir()) / "adaptrec-scratch" / run_key(self.uri)
        )
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def folder_is_complete(self, name: str) -> bool:
        return self.fs.exists(f"{self.path(name)}/{_SUCCESS}")

    @contextmanager
    def reading_folder(self, name: str) -> Iterator[Path]:
        """Yield a local path to a published folder (downloaded first when the run dir is remote)."""
        if not self.folder_is_complete(name):
            raise InputDataError(f"{self.uri_of(name)} is missing or incomplete: run the stage that writes it first")
        if self.is_local:
            yield Path(self.path(name))
            return
        staging = Path(tempfile.mkdtemp(prefix="adaptrec-read-"))
        try:
            # Trailing slashes copy the folder's contents, not the folder itself (as with cp -r).
            self.fs.get(f"{self.path(name)}/", f"{staging}/", recursive=True)
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
