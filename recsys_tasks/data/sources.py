"""Readers that turn public dataset formats into the canonical tables.

They never touch the network and read through pyarrow's multi-threaded CSV reader. Files are
recognised by their leading bytes (gzip, bz2 and xz are decompressed, Parquet is read as Parquet),
and text that only says "missing" is a null. A parse or I/O problem (truncated line, wrong
delimiter, text where an id belongs, a file that cannot be read) raises InputDataError naming the
file and the line, never the line's content; values that parse but are implausible are left for
the validate stage to report.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import posixpath
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial, reduce
from pathlib import Path
from typing import BinaryIO

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from recsys_tasks.data.config import ColumnMapping
from recsys_tasks.errors import InputDataError

_MOVIELENS_GENRES = 19
_RATING_TYPES = {"user_id": pa.string(), "item_id": pa.int64(), "rating": pa.float32(), "timestamp": pa.int64()}


# Tokens that exporters write for a missing value; compared after trimming, ignoring case.
NULL_TOKENS = ("", "null", "none", "nan", "n/a", "#n/a")
_CSV_NULL_VALUES = sorted({variant for token in NULL_TOKENS for variant in (token, token.upper(), token.title())})
# Leading bytes of the compressed formats: the stdlib reads three of them transparently, the others are named.
_DECOMPRESSORS = {
    b"\x1f\x8b": lambda raw: gzip.GzipFile(fileobj=raw),
    b"BZh": bz2.BZ2File,
    b"\xfd7zXZ\x00": lzma.LZMAFile,
}
_DECOMPRESSED_STREAMS = (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)
_UNSUPPORTED_CONTAINERS = {b"PK\x03\x04": "a zip archive", b"(\xb5/\xfd": "zstd-compressed"}
_PARQUET_MAGIC = b"PAR1"
_ZONE_SUFFIX = r"(Z|[+-]\d{2}:?\d{2})$"
_TYPE_NAMES = {"int8": "an integer", "int64": "an integer", "float": "a number", "double": "a number"}
# Period files carry no clock: period N starts N weeks after this moment (2016-01-01 UTC, the DIGINETICA year).
PERIOD_CLOCK_START = 1_451_606_400
PERIOD_SECONDS = 7 * 86_400
_PERIOD_FILE = re.compile(r"period_(\d+)\.txt")


@contextmanager
def _input(uri: str, what: str) -> Iterator[BinaryIO]:
    """The file at ``uri`` as bytes, decompressed when its first bytes say gzip, bz2 or xz.

    Any I/O problem while it is read (permissions, a folder where a file belongs, a truncated archive) becomes
    one InputDataError naming the file, never a traceback.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise InputDataError(f"{what} not found at {uri}: check the data path")
    try:
        with fs.open(path, "rb") as raw:
            magic = raw.read(8)
            raw.seek(0)
            for prefix, kind in _UNSUPPORTED_CONTAINERS.items():
                if magic.startswith(prefix):
                    raise InputDataError(
                        f"{what} at {uri} is {kind}: unpack it first (gzip, bz2 and xz are read as is)"
                    )
            decompressor = next((opener for prefix, opener in _DECOMPRESSORS.items() if magic.startswith(prefix)), None)
            if decompressor is None:
                yield raw
            else:
                with decompressor(raw) as decompressed:
                    yield decompressed
    except (OSError, EOFError, lzma.LZMAError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise InputDataError(f"{what} at {uri} cannot be read: {reason}") from None


def _starts_with_parquet_magic(uri: str, what: str) -> bool:
    with _input(uri, what) as fh:
        return fh.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC


def _csv(
    source: Callable[[], AbstractContextManager],
    read: pcsv.ReadOptions,
    parse: pcsv.ParseOptions,
    convert: pcsv.ConvertOptions,
) -> pa.Table:
    """Read CSV from ``source()``; a problem names the line, never its content (it may hold a raw user id)."""
    with source() as fh:
        try:
            return pcsv.read_csv(fh, read_options=_safe_for(fh, read), parse_options=parse, convert_options=convert)
        except pa.ArrowInvalid as exc:
            problem = str(exc)
    # Only on these error paths is the file read again, to find the line without showing it.
    if re.search(r"Expected \d+ columns, got \d+", problem):
        raise pa.ArrowInvalid(_wrong_field_count(source, read, parse))
    if "CSV conversion error" in problem and convert.column_types:
        raise pa.ArrowInvalid(_first_unconvertible_value(source, read, parse, convert))
    raise pa.ArrowInvalid(problem)


def _safe_for(fh: BinaryIO, read: pcsv.ReadOptions) -> pcsv.ReadOptions:
    """``read`` for ``fh``: on this thread when ``fh`` is a Python decompressor. pyarrow's reader threads call back into
    it, and when it raises (a truncated archive) a thread can outlive the error and abort the process at exit."""
    return _single_threaded(read) if isinstance(fh, _DECOMPRESSED_STREAMS) else read


def _single_threaded(read: pcsv.ReadOptions) -> pcsv.ReadOptions:
    """pyarrow numbers the rows it reports only when it reads on one thread."""
    return pcsv.ReadOptions(
        use_threads=False, column_names=read.column_names, encoding=read.encoding, block_size=read.block_size
    )


def _wrong_field_count(source: Callable[[], AbstractContextManager], read, parse) -> str:
    wrong_rows: list[pcsv.InvalidRow] = []

    def note(row: pcsv.InvalidRow) -> str:
        wrong_rows.append(row)
        return "skip"

    with source() as fh:
        pcsv.read_csv(
            fh,
            read_options=_single_threaded(read),
            parse_options=pcsv.ParseOptions(
                delimiter=parse.delimiter, quote_char=parse.quote_char, invalid_row_handler=note
            ),
            convert_options=pcsv.ConvertOptions(include_columns=[]),
        )
    first = wrong_rows[0]
    hint = " (wrong delimiter or encoding?)" if first.actual_columns == 1 else ""
    others = f"; {len(wrong_rows) - 1} more such lines" if len(wrong_rows) > 1 else ""
    return f"line {first.number} has {first.actual_columns} fields instead of {first.expected_columns}{hint}{others}"


def _first_unconvertible_value(source: Callable[[], AbstractContextManager], read, parse, convert) -> str:
    """The first line whose value does not convert to its column's type, found by halving, the value not shown."""
    with source() as fh:
        text = pcsv.read_csv(
            fh,
            read_options=_safe_for(fh, read),
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in convert.column_types},
                include_columns=list(convert.column_types),
                null_values=convert.null_values,
                strings_can_be_null=convert.strings_can_be_null,
            ),
        )
    failures = []
    for name, wanted in convert.column_types.items():
        values = text[name]
        if _converts(values, wanted):
            continue
        low, high = 0, len(values)  # values[low:high] holds a value that does not convert
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if not _converts(values[low:middle], wanted) else (middle, high)
        failures.append((low, name, wanted))
    if not failures:
        return "a value does not convert to its column's type"
    row, name, wanted = min(failures)
    header_lines = 0 if read.column_names else 1
    return f"line {row + 1 + header_lines}: {name} is not {_TYPE_NAMES.get(str(wanted), str(wanted))}"


def _converts(values: pa.ChunkedArray, wanted: pa.DataType) -> bool:
    try:
        pc.cast(pc.utf8_trim_whitespace(values), wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


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
    replaced by the ASCII unit separator, which text data never holds. Null-like tokens
    (``NULL``, ``nan``, ``None``, empty) become nulls in every column, text included.
    """
    shown, source = delimiter, partial(_input, uri, what)
    if len(delimiter) > 1:
        with _input(uri, what) as fh:
            text = fh.read().replace(delimiter.encode(), b"\x1f")
        source, delimiter = (lambda: nullcontext(pa.BufferReader(text))), "\x1f"
    try:
        return _csv(
            source,
            pcsv.ReadOptions(column_names=names, encoding=encoding),
            pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False),
            pcsv.ConvertOptions(
                column_types=types,
                include_columns=list(types),
                null_values=_CSV_NULL_VALUES,
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{what} at {uri} is not valid {shown!r}-separated text: {_parse_problem(exc)}") from None


def _parse_problem(exc: Exception) -> str:
    """pyarrow's reason without the offending line or value: either may hold a raw user id."""
    reason = str(exc).splitlines()[0]
    reason = re.sub(r"^CSV parse error: (Row #\d+: )?(Expected \d+ columns, got \d+):.*", r"\2", reason)
    return re.sub(r": invalid value .*", ": a value of another type", reason)


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
    with _input(path, "item attribute file") as fh:
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
    with _input(path, "sequence file") as fh:
        for line_number, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on the first line: an editor's byte-order mark is not part of the first user id.
                fields = raw.decode("utf-8-sig" if line_number == 1 else "utf8").split()
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
            "user_id": null_tokens_as_nulls(pa.array(users, pa.string())),
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


def null_tokens_as_nulls(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text that only says "missing" (``NULL``, ``nan``, ``None``, empty, ...) becomes a real null."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column
    token = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    return pc.if_else(pc.is_in(token, pa.array(NULL_TOKENS)), pa.scalar(None, column.type), column)


def _read_any_table(uri: str, columns: list[str], text_columns: list[str]) -> pa.Table:
    """Parquet (known by its leading bytes, whatever the name) or CSV with a header; null tokens as nulls.

    ``text_columns`` of a CSV file are read as text, not inferred (user ids like ``007`` keep their zeros).
    """
    what = f"interaction table {uri}"
    try:
        if _starts_with_parquet_magic(uri, "interaction table"):
            with _input(uri, "interaction table") as fh:
                table = pq.read_table(fh)
        else:
            table = _csv(
                partial(_input, uri, "interaction table"),
                pcsv.ReadOptions(),
                pcsv.ParseOptions(),
                pcsv.ConvertOptions(
                    column_types=dict.fromkeys(text_columns, pa.string()),
                    null_values=_CSV_NULL_VALUES,
                    strings_can_be_null=True,
                ),
            )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputDataError(f"{what} cannot be parsed: {_parse_problem(exc)}") from None
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise InputDataError(f"{what} has no column {', '.join(map(repr, missing))}; its columns: {table.column_names}")
    table = table.select(columns)
    repeated = _repeated_header_line(table)
    if repeated is not None:
        raise InputDataError(f"{what} repeats its header on line {repeated}: were files concatenated? Remove it")
    return pa.table([null_tokens_as_nulls(table[name]) for name in columns], names=columns)


def _repeated_header_line(table: pa.Table) -> int | None:
    """The file line of the first row whose text columns all hold their own column names, if any."""
    text_columns = [name for name in table.column_names if pa.types.is_string(table.schema.field(name).type)]
    if not text_columns:  # a header row would have turned its columns to text
        return None
    is_header = reduce(pc.and_, [pc.fill_null(pc.equal(table[name], name), False) for name in text_columns])
    rows = np.flatnonzero(is_header.to_numpy(zero_copy_only=False))
    return int(rows[0]) + 2 if rows.size else None  # lines count from 1, after the header line


def _unix_seconds(column: pa.ChunkedArray, uri: str, name: str) -> pa.ChunkedArray:
    """Unix seconds from integers, a timestamp type or ISO-8601 text (``T`` or a space; zoned text → UTC)."""
    try:
        if pa.types.is_integer(column.type):
            return column.cast(pa.int64())
        if pa.types.is_timestamp(column.type):
            return pc.cast(column, pa.timestamp("s", column.type.tz), safe=False).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"column {name!r} of {uri} holds timestamps outside the representable range") from None
    if pa.types.is_string(column.type):
        zoned = pc.fill_null(pc.match_substring_regex(column, _ZONE_SUFFIX), False).to_numpy(zero_copy_only=False)
        present = column.is_valid().to_numpy(zero_copy_only=False)
        if zoned[present].any() and not zoned[present].all():
            with_zone, without = np.flatnonzero(present & zoned)[0], np.flatnonzero(present & ~zoned)[0]
            raise InputDataError(
                f"column {name!r} of {uri} mixes ISO-8601 times with a zone (first on row {with_zone + 1}) and "
                f"without one (first on row {without + 1}): give every value a zone, or none (read as UTC)"
            )
        try:
            as_time = column.cast(pa.timestamp("ns", "UTC" if zoned[present].any() else None))
            return pc.cast(as_time, pa.timestamp("s", as_time.type.tz), safe=False).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    raise InputDataError(f"column {name!r} of {uri} is neither unix seconds, a timestamp nor ISO-8601 text") from None


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


def _item_ids(table: pa.Table, mapping: ColumnMapping, uri: str) -> pa.ChunkedArray:
    """Item ids as integers; text that is not a number is refused, naming a user/item swap when it is one."""
    column = table[mapping.item]
    try:
        return column.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        text = column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"item ids in column {mapping.item!r} of {uri} must be integers") from None
    not_numbers = pc.invert(pc.fill_null(pc.match_substring_regex(text, r"^\s*[+-]?\d+\s*$"), True))
    wrong = pc.filter(text, not_numbers)
    user_ids = pc.unique(table[mapping.user].cast(pa.string()).drop_null())
    from_user_column = pc.sum(pc.is_in(wrong, user_ids)).as_py() or 0
    problem = (
        f"item ids in column {mapping.item!r} of {uri} must be integers: {len(wrong)} "
        f"row{'s hold' if len(wrong) > 1 else ' holds'} other text"
    )
    if from_user_column * 2 > len(wrong):
        problem += (
            f", {from_user_column} of them values of the user column {mapping.user!r}: user and item look swapped "
            "in those rows"
        )
    raise InputDataError(problem)


def _user_ids(table: pa.Table, mapping: ColumnMapping, uri: str) -> pa.ChunkedArray:
    try:
        return null_tokens_as_nulls(table[mapping.user].cast(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputDataError(f"user ids in column {mapping.user!r} of {uri} must be text or numbers") from None


def read_table(uri: str, mapping: ColumnMapping) -> tuple[pa.Table, pa.Table]:
    """A generic CSV (with header) or Parquet file of interactions, columns named by ``mapping``."""
    table = _read_any_table(uri, mapping.columns(), text_columns=[mapping.user])
    items = _item_ids(table, mapping, uri)
    interactions = pa.table(
        {
            "user_id": _user_ids(table, mapping, uri),
            "item_id": items,
            "timestamp": _unix_seconds(table[mapping.timestamp], uri, mapping.timestamp),
            "rating": _ratings(table, mapping, uri),
        },
        schema=INTERACTIONS_SCHEMA,
    )
    return interactions, _item_attributes(table, items, mapping, uri)


def period_files(folder: str) -> list[tuple[int, str]]:
    """The ``period_N.txt`` files of ``folder`` as (N, URI), ordered by N."""
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.isdir(path):
        raise InputDataError(f"period folder not found at {folder}: check the data path")
    found = sorted(
        (int(match.group(1)), f"{folder.rstrip('/')}/{posixpath.basename(name)}")
        for name in fs.ls(path, detail=False)
        if (match := _PERIOD_FILE.fullmatch(posixpath.basename(name)))
    )
    if not found:
        raise InputDataError(f"period folder {folder} holds no period_N.txt files")
    numbers = [number for number, _ in found]
    if len(set(numbers)) < len(numbers):
        raise InputDataError(f"period folder {folder} holds two files of one period (e.g. period_1.txt, period_01.txt)")
    return found


def file_fingerprint(uri: str) -> str:
    """SHA-256 of the file's bytes as stored."""
    fs, path = fsspec.core.url_to_fs(uri)
    digest = hashlib.sha256()
    try:
        with fs.open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputDataError(f"{uri} cannot be read: {exc.strerror or type(exc).__name__}") from None
    return digest.hexdigest()


def read_period(uri: str, number: int) -> pa.Table:
    """Period file ``number``: one action a line, ``session item`` (integers), in time order.

    Sessions carry no identity across periods, so a session is a user of its own, ``"<number>:<session>"``; item ids
    are kept. The files have no clock: action i of the file (from 0) is stamped ``PERIOD_CLOCK_START + number weeks
    + i`` seconds, which keeps the order of the actions within a period and of the periods, as long as a period has
    fewer actions than a week has seconds. Interactions are implicit: every rating is 1.0.
    """
    what = f"period file {posixpath.basename(uri)}"
    actions = _read_delimited(
        uri, what, names=["session", "item_id"], delimiter=" ", types={"session": pa.string(), "item_id": pa.int64()}
    )
    if actions.num_rows >= PERIOD_SECONDS:
        raise InputDataError(
            f"{what} at {uri} has {actions.num_rows} actions: its clock of one second an action would run into the "
            "next period"
        )
    start = PERIOD_CLOCK_START + number * PERIOD_SECONDS
    return pa.table(
        {
            "user_id": pc.binary_join_element_wise(str(number), actions["session"], ":"),
            "item_id": actions["item_id"],
            "timestamp": pa.array(np.arange(start, start + actions.num_rows, dtype=np.int64)),
            "rating": pa.array(np.ones(actions.num_rows, dtype=np.float32)),
        },
        schema=INTERACTIONS_SCHEMA,
    )
