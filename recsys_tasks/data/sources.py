"""Readers that turn public dataset formats into the canonical tables.

They never touch the network and read through pyarrow's multi-threaded CSV reader. A parse
problem (truncated line, wrong delimiter, text where an id belongs) raises InputDataError naming
the file; values that parse but are implausible are left for the validate stage to report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_tasks.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from recsys_tasks.errors import InputDataError

_MOVIELENS_GENRES = 19
_RATING_TYPES = {"user_id": pa.string(), "item_id": pa.int64(), "rating": pa.float32(), "timestamp": pa.int64()}


def _open(uri: str, what: str):
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise InputDataError(f"{what} not found at {uri}: check the data path")
    return fs.open(path, "rb")


def _read_delimited(
    uri: str,
    what: str,
    *,
    delimiter: str,
    types: dict,
    names: list[str] | None = None,
    encoding: str = "utf8",
    quoted: bool = False,
) -> pa.Table:
    """Parse a delimited file; ``names=None`` reads them from a header line.

    pyarrow splits on one character only; a longer delimiter (MovieLens-1M's ``::``) is first
    replaced by the ASCII unit separator, which text data never holds.
    """
    with _open(uri, what) as fh:
        source = fh
        if len(delimiter) > 1:
            source, delimiter = pa.BufferReader(fh.read().replace(delimiter.encode(), b"\x1f")), "\x1f"
        try:
            return pcsv.read_csv(
                source,
                read_options=pcsv.ReadOptions(column_names=names, encoding=encoding),
                parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False),
                convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(types)),
            )
        except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError) as exc:
            shown = "::" if delimiter == "\x1f" else delimiter
            raise InputDataError(
                f"{what} at {uri} is not valid {shown!r}-separated text: {_parse_problem(exc)}"
            ) from None


def _parse_problem(exc: Exception) -> str:
    """pyarrow's reason without the offending line: it holds a raw user id, which must not reach a log."""
    reason = str(exc).splitlines()[0]
    columns = re.search(r"Expected (\d+) columns, got (\d+)", reason)
    if columns is None:
        return reason
    hint = " (wrong delimiter or encoding?)" if columns.group(2) == "1" else ""
    return f"a line has {columns.group(2)} fields instead of {columns.group(1)}{hint}"


def _genre_attributes(genres: pa.ChunkedArray) -> pa.Array:
    """``Action|Comedy`` → attribute ids, numbered by the sorted genre names so runs agree."""
    split = [value.split("|") if value else [] for value in genres.to_pylist()]
    vocabulary = {name: index for index, name in enumerate(sorted({name for names in split for name in names}))}
    return pa.array([[vocabulary[name] for name in names] for names in split], pa.list_(pa.int64()))


def _catalogue(item_ids: pa.ChunkedArray, titles: pa.ChunkedArray, attributes: pa.Array) -> pa.Table:
    return pa.table({"item_id": item_ids, "title": titles, "attributes": attributes}, schema=ITEMS_SCHEMA)


def _movielens_ratings(path: str, file_name: str, *, delimiter: str, encoding: str = "utf8") -> pa.Table:
    """The header-less ``user item rating time`` files of MovieLens-100K and -1M, as canonical interactions."""
    ratings = _read_delimited(
        f"{path.rstrip('/')}/{file_name}",
        f"MovieLens ratings file {file_name}",
        names=["user_id", "item_id", "rating", "timestamp"],
        delimiter=delimiter,
        types=_RATING_TYPES,
        encoding=encoding,
    )
    return ratings.select(INTERACTIONS_SCHEMA.names).cast(INTERACTIONS_SCHEMA)


def read_movielens_100k(path: str) -> tuple[pa.Table, pa.Table]:
    """MovieLens-100K: ``u.data`` (user, item, rating, unix time; tabs) and ``u.item`` (``|``, latin-1)."""
    ratings = _movielens_ratings(path, "u.data", delimiter="\t")
    genre_columns = [f"genre_{g}" for g in range(_MOVIELENS_GENRES)]
    movies = _read_delimited(
        f"{path.rstrip('/')}/u.item",
        "MovieLens item file u.item",
        names=["item_id", "title", "release_date", "video_release_date", "url", *genre_columns],
        delimiter="|",
        types={"item_id": pa.int64(), "title": pa.string(), **{c: pa.int8() for c in genre_columns}},
        encoding="latin-1",
    )
    flags = np.stack([movies[c].to_numpy(zero_copy_only=False) for c in genre_columns], axis=1)
    attributes = pa.array([np.flatnonzero(row).tolist() for row in flags], pa.list_(pa.int64()))
    return ratings, _catalogue(movies["item_id"], movies["title"], attributes)


def read_movielens_1m(path: str) -> tuple[pa.Table, pa.Table]:
    """MovieLens-1M: ``ratings.dat`` (``user::item::rating::time``) and ``movies.dat`` (``item::title::genres``)."""
    ratings = _movielens_ratings(path, "ratings.dat", delimiter="::", encoding="latin-1")
    movies = _read_delimited(
        f"{path.rstrip('/')}/movies.dat",
        "MovieLens item file movies.dat",
        names=["item_id", "title", "genres"],
        delimiter="::",
        types={"item_id": pa.int64(), "title": pa.string(), "genres": pa.string()},
        encoding="latin-1",
    )
    return ratings, _catalogue(movies["item_id"], movies["title"], _genre_attributes(movies["genres"]))


def read_movielens_csv(path: str) -> tuple[pa.Table, pa.Table]:
    """MovieLens-25M / latest: ``ratings.csv`` and ``movies.csv`` with headers, quoted titles."""
    ratings = _read_delimited(
        f"{path.rstrip('/')}/ratings.csv",
        "MovieLens ratings file ratings.csv",
        delimiter=",",
        types={"userId": pa.string(), "movieId": pa.int64(), "rating": pa.float32(), "timestamp": pa.int64()},
    ).rename_columns(["user_id", "item_id", "rating", "timestamp"])
    movies = _read_delimited(
        f"{path.rstrip('/')}/movies.csv",
        "MovieLens item file movies.csv",
        delimiter=",",
        types={"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()},
        quoted=True,
    )
    genres = pc.if_else(pc.equal(movies["genres"], "(no genres listed)"), "", movies["genres"])
    return ratings.select(INTERACTIONS_SCHEMA.names).cast(INTERACTIONS_SCHEMA), _catalogue(
        movies["movieId"], movies["title"], _genre_attributes(genres)
    )


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


class ColumnMapping(BaseModel):
    """Which columns of a generic table hold the canonical fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = Field("user_id", description="User id column (any type; pseudonymised at ingest).")
    item: str = Field("item_id", description="Item id column (integers).")
    timestamp: str = Field("timestamp", description="Unix seconds, a timestamp type, or ISO-8601 text.")
    rating: str | None = Field("rating", description="Rating column; None treats every row as an implicit 1.0.")
    event: str | None = Field(None, description="Event-type column (view, cart, ...); replaces the rating column.")
    event_ratings: dict[str, float] = Field(
        default_factory=dict, description="With an event column: the rating each event type counts as."
    )
    attributes: str | None = Field(None, description="Column of item attribute ids (an integer or a list of them).")

    @model_validator(mode="after")
    def _events_have_ratings(self) -> ColumnMapping:
        if self.event and not self.event_ratings:
            raise ValueError("an event column needs event_ratings, e.g. {'view': 1, 'purchase': 5}")
        return self

    def columns(self) -> list[str]:
        label = [self.event] if self.event else [self.rating] if self.rating else []
        return [self.user, self.item, self.timestamp, *label, *([self.attributes] if self.attributes else [])]


def _read_any_table(uri: str, columns: list[str]) -> pa.Table:
    what = f"interaction table {uri}"
    with _open(uri, "interaction table") as fh:
        try:
            table = pq.read_table(fh) if uri.endswith(".parquet") else pcsv.read_csv(fh)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise InputDataError(f"{what} cannot be parsed: {str(exc).splitlines()[0]}") from None
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise InputDataError(f"{what} has no column {', '.join(map(repr, missing))}; its columns: {table.column_names}")
    return table


def _unix_seconds(column: pa.ChunkedArray, uri: str, name: str) -> pa.ChunkedArray:
    try:
        if pa.types.is_integer(column.type):
            return column.cast(pa.int64())
        as_time = column if pa.types.is_timestamp(column.type) else column.cast(pa.timestamp("s"))
        return as_time.cast(pa.timestamp("s")).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(
            f"column {name!r} of {uri} is neither unix seconds, a timestamp nor ISO-8601 text"
        ) from None


def _ratings(table: pa.Table, mapping: ColumnMapping, uri: str) -> pa.Array | pa.ChunkedArray:
    if mapping.event:
        events = table[mapping.event].cast(pa.string())
        unknown = sorted(set(pc.unique(events.drop_null()).to_pylist()) - set(mapping.event_ratings))
        if unknown:
            raise InputDataError(f"event types {unknown} in column {mapping.event!r} of {uri} have no event_ratings")
        types, values = zip(*mapping.event_ratings.items(), strict=True)
        return pc.take(pa.array(values, pa.float32()), pc.index_in(events, pa.array(types)))
    if not mapping.rating:
        return pa.array(np.ones(len(table), np.float32))
    try:
        return table[mapping.rating].cast(pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"ratings in column {mapping.rating!r} of {uri} must be numbers") from None


def _item_attributes(table: pa.Table, items: pa.ChunkedArray, mapping: ColumnMapping, uri: str) -> pa.Table:
    """One row per item; its attributes are every attribute id any of its rows carries."""
    if mapping.attributes is None:
        catalogue = pl.DataFrame({"item_id": items}).drop_nulls().unique().sort("item_id")
        catalogue = catalogue.with_columns(attributes=pl.lit([], pl.List(pl.Int64)))
    else:
        frame = pl.DataFrame({"item_id": items, "attributes": table[mapping.attributes]})
        if frame["attributes"].dtype.is_nested():
            frame = frame.explode("attributes")
        try:
            catalogue = (
                frame.drop_nulls("item_id")
                .group_by("item_id")
                .agg(pl.col("attributes").drop_nulls().cast(pl.Int64).unique().sort())
                .sort("item_id")
            )
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
            raise InputDataError(f"attribute ids in column {mapping.attributes!r} of {uri} must be integers") from None
    return _catalogue(
        catalogue["item_id"].to_arrow(), pa.nulls(catalogue.height, pa.string()), catalogue["attributes"].to_arrow()
    )


def read_table(uri: str, mapping: ColumnMapping) -> tuple[pa.Table, pa.Table]:
    """A generic CSV (with header) or Parquet file of interactions, columns named by ``mapping``."""
    table = _read_any_table(uri, mapping.columns())
    try:
        items = table[mapping.item].cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"item ids in column {mapping.item!r} of {uri} must be integers") from None
    interactions = pa.table(
        {
            "user_id": table[mapping.user].cast(pa.string()),
            "item_id": items,
            "timestamp": _unix_seconds(table[mapping.timestamp], uri, mapping.timestamp),
            "rating": _ratings(table, mapping, uri),
        },
        schema=INTERACTIONS_SCHEMA,
    )
    return interactions, _item_attributes(table, items, mapping, uri)
