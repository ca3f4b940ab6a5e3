"""Readers that turn public dataset formats into the canonical tables.

They never touch the network and read through pyarrow's multi-threaded CSV reader. A parse
problem (truncated line, wrong delimiter, text where an id belongs) raises InputDataError naming
the file; values that parse but are implausible are left for the validate stage to report.
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from recsys_tasks.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from recsys_tasks.errors import InputDataError

_MOVIELENS_GENRES = 19


def _open(uri: str, what: str):
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise InputDataError(f"{what} not found at {uri}: check the data path")
    return fs.open(path, "rb")


def _read_delimited(uri: str, what: str, names: list[str], delimiter: str, types: dict, encoding: str = "utf8"):
    with _open(uri, what) as fh:
        try:
            return pcsv.read_csv(
                fh,
                read_options=pcsv.ReadOptions(column_names=names, encoding=encoding),
                parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char=False),
                convert_options=pcsv.ConvertOptions(column_types=types),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0]
            raise InputDataError(f"{what} at {uri} is not valid {delimiter!r}-separated text: {reason}") from None


def read_movielens_100k(path: str) -> tuple[pa.Table, pa.Table]:
    """MovieLens-100K: ``u.data`` (user, item, rating, unix time; tabs) and ``u.item`` (``|``, latin-1)."""
    ratings = _read_delimited(
        f"{path.rstrip('/')}/u.data",
        "MovieLens ratings file u.data",
        ["user_id", "item_id", "rating", "timestamp"],
        "\t",
        {"user_id": pa.string(), "item_id": pa.int64(), "rating": pa.float32(), "timestamp": pa.int64()},
    )
    genre_columns = [f"genre_{g}" for g in range(_MOVIELENS_GENRES)]
    movies = _read_delimited(
        f"{path.rstrip('/')}/u.item",
        "MovieLens item file u.item",
        ["item_id", "title", "release_date", "video_release_date", "url", *genre_columns],
        "|",
        {"item_id": pa.int64(), "title": pa.string(), **{c: pa.int8() for c in genre_columns}},
        encoding="latin-1",
    )
    flags = np.stack([movies[c].to_numpy(zero_copy_only=False) for c in genre_columns], axis=1)
    items = pa.table(
        {
            "item_id": movies["item_id"],
            "title": movies["title"],
            "attributes": pa.array([np.flatnonzero(row).tolist() for row in flags], pa.list_(pa.int64())),
        },
        schema=ITEMS_SCHEMA,
    )
    return ratings.select(INTERACTIONS_SCHEMA.names).cast(INTERACTIONS_SCHEMA), items


def _attributes_file(sequences_uri: str) -> str | None:
    """``Beauty.txt`` pairs with ``Beauty_item2attributes.json`` (the S3-Rec layout)."""
    fs, path = fsspec.core.url_to_fs(sequences_uri)
    stem = Path(path)
    candidate = str(stem.with_name(f"{stem.stem}_item2attributes.json"))
    if fs.exists(candidate):
        return candidate
    siblings = sorted(fs.glob(str(stem.parent / "*item2attributes.json")))
    return siblings[0] if siblings else None


def _read_attributes(path: str) -> dict[str, list[int]]:
    """``{"item id": [attribute ids]}``; anything else is refused with the file's name."""
    with _open(path, "item attribute file") as fh:
        try:
            attributes = json.loads(fh.read().decode("utf8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputDataError(f"item attribute file {path} is not valid UTF-8 JSON: {exc}") from None
    well_formed = isinstance(attributes, dict) and all(
        isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        for ids in attributes.values()
    )
    if not well_formed:
        raise InputDataError(f"item attribute file {path} must map item ids to lists of integer attribute ids")
    return attributes


def read_sequences(path: str, base_timestamp: int = 1_577_836_800) -> tuple[pa.Table, pa.Table]:
    """One user per line, ``user item1 item2 ...`` in time order, plus an optional item2attributes.json.

    The format carries order but no clock: event k of a user gets ``base_timestamp + k`` seconds, which
    keeps the order exact. Interactions are implicit, so every rating is 1.0.
    """
    users, items, positions = [], [], []
    with _open(path, "sequence file") as fh:
        for line_number, raw in enumerate(fh, start=1):
            try:
                fields = raw.decode("utf8").split()
            except UnicodeDecodeError:
                raise InputDataError(f"sequence file {path} line {line_number}: not UTF-8 text") from None
            if not fields:
                continue
            if len(fields) < 2:
                raise InputDataError(f"sequence file {path} line {line_number}: expected 'user item1 item2 ...'")
            try:
                sequence = [int(token) for token in fields[1:]]
            except ValueError:
                raise InputDataError(f"sequence file {path} line {line_number}: item ids must be integers") from None
            users.extend([fields[0]] * len(sequence))
            items.extend(sequence)
            positions.extend(range(len(sequence)))
    if not items:
        raise InputDataError(f"sequence file {path} holds no sequences")
    interactions = pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.int64()),
            "timestamp": pa.array(np.asarray(positions, dtype=np.int64) + base_timestamp),
            "rating": pa.array(np.ones(len(items), dtype=np.float32)),
        },
        schema=INTERACTIONS_SCHEMA,
    )
    catalogue = np.unique(np.asarray(items, dtype=np.int64))
    attributes_path = _attributes_file(path)
    attributes = _read_attributes(attributes_path) if attributes_path else {}
    items_table = pa.table(
        {
            "item_id": pa.array(catalogue, pa.int64()),
            "title": pa.nulls(len(catalogue), pa.string()),
            "attributes": pa.array([attributes.get(str(i), []) for i in catalogue], pa.list_(pa.int64())),
        },
        schema=ITEMS_SCHEMA,
    )
    return interactions, items_table
