"""Readers of public dataset formats, on tiny hand-written files and (when present) the real data."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from recsys_tasks.data.config import ColumnMapping
from recsys_tasks.data.sources import (
    PERIOD_CLOCK_START,
    PERIOD_SECONDS,
    _parse_problem,
    period_files,
    read_movielens_1m,
    read_movielens_100k,
    read_movielens_csv,
    read_period,
    read_sequences,
    read_table,
)
from recsys_tasks.errors import InputDataError
from tests.conftest import AMAZON_BEAUTY, DIGINETICA_PERIODS, MOVIELENS_100K

RATINGS = [("1", 10, 5.0, 881250949), ("1", 20, 3.0, 881250950), ("2", 10, 4.0, 891717742)]
MOVIES = {10: ("Café Society (1995)", [0, 5]), 20: ("Toy Story (1995)", [3, 4, 18])}


def movie_line(item_id: int, title: str, genres: list[int]) -> str:
    flags = ["1" if genre in genres else "0" for genre in range(19)]
    return "|".join([str(item_id), title, "01-Jan-1995", "", "http://us.imdb.com/x", *flags])


def write_movielens(folder: Path, ratings_text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if ratings_text is None:
        ratings_text = "".join(f"{user}\t{item}\t{int(rating)}\t{time}\n" for user, item, rating, time in RATINGS)
    (folder / "u.data").write_text(ratings_text)
    lines = [movie_line(item, title, genres) for item, (title, genres) in MOVIES.items()]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def write_sequences(folder: Path, lines: list[str], attributes: str | None = None, stem: str = "Shop") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.txt"
    path.write_text("\n".join(lines) + "\n")
    if attributes is not None:
        (folder / f"{stem}_item2attributes.json").write_text(attributes)
    return path


def test_movielens_ratings_are_read_into_the_canonical_schema(tmp_path: Path) -> None:
    interactions, _ = read_movielens_100k(str(write_movielens(tmp_path / "ml")))

    assert interactions.schema == INTERACTIONS_SCHEMA
    rows = list(
        zip(
            interactions["user_id"].to_pylist(),
            interactions["item_id"].to_pylist(),
            interactions["rating"].to_pylist(),
            interactions["timestamp"].to_pylist(),
            strict=True,
        )
    )
    assert rows == RATINGS


def test_movielens_items_carry_genre_indices_and_latin1_titles(tmp_path: Path) -> None:
    _, items = read_movielens_100k(str(write_movielens(tmp_path / "ml")))

    assert items.schema == ITEMS_SCHEMA
    assert items.to_pylist() == [
        {"item_id": item, "title": title, "attributes": genres} for item, (title, genres) in MOVIES.items()
    ]


def test_movielens_missing_folder_names_the_ratings_file(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"u\.data not found"):
        read_movielens_100k(str(tmp_path / "does-not-exist"))


@pytest.mark.parametrize(
    "ratings_text",
    [
        pytest.param("1\t10\t5\t881250949\n1\tten\t3\t881250950\n", id="text-in-item-column"),
        pytest.param("1\t10\t5\t881250949\n1 20 3 881250950\n", id="space-instead-of-tab"),
        pytest.param("1\t10\t5\t881250949\n1\t20\t3\n", id="truncated-line"),
    ],
)
def test_movielens_malformed_ratings_raise_input_data_error(tmp_path: Path, ratings_text: str) -> None:
    folder = write_movielens(tmp_path / "ml", ratings_text=ratings_text)

    with pytest.raises(InputDataError, match=r"u\.data"):
        read_movielens_100k(str(folder))


def test_sequences_become_implicit_interactions_in_file_order(tmp_path: Path) -> None:
    path = write_sequences(tmp_path, ["alice 3 1 2", "", "bob 2 5"], attributes=json.dumps({"1": [7], "2": [8, 9]}))

    interactions, items = read_sequences(str(path), base_timestamp=1000)

    assert interactions.schema == INTERACTIONS_SCHEMA
    assert interactions.to_pylist() == [
        {"user_id": "alice", "item_id": 3, "timestamp": 1000, "rating": 1.0},
        {"user_id": "alice", "item_id": 1, "timestamp": 1001, "rating": 1.0},
        {"user_id": "alice", "item_id": 2, "timestamp": 1002, "rating": 1.0},
        {"user_id": "bob", "item_id": 2, "timestamp": 1000, "rating": 1.0},
        {"user_id": "bob", "item_id": 5, "timestamp": 1001, "rating": 1.0},
    ]
    assert items.schema == ITEMS_SCHEMA
    assert items.to_pylist() == [
        {"item_id": 1, "title": None, "attributes": [7]},
        {"item_id": 2, "title": None, "attributes": [8, 9]},
        {"item_id": 3, "title": None, "attributes": []},
        {"item_id": 5, "title": None, "attributes": []},
    ]


def test_sequences_without_attribute_file_have_empty_attributes(tmp_path: Path) -> None:
    _, items = read_sequences(str(write_sequences(tmp_path, ["u1 4 2 9"])))

    assert items["item_id"].to_pylist() == [2, 4, 9]
    assert items["attributes"].to_pylist() == [[], [], []]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["u1 1 2 3", "u2 4 five 6"], "line 2: item ids must be integers"),
        (["u1 1 2 3", "", "u2"], "line 3: expected 'user item1 item2 ...'"),
        ([""], "holds no sequences"),
    ],
)
def test_malformed_sequence_files_raise_with_line_number(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_sequences(tmp_path, lines)

    with pytest.raises(InputDataError, match=message):
        read_sequences(str(path))


def test_invalid_attribute_json_raises_input_data_error(tmp_path: Path) -> None:
    path = write_sequences(tmp_path, ["u1 1 2 3"], attributes='{"1": [7], "2": ')

    with pytest.raises(InputDataError, match="item2attributes.json is not valid UTF-8 JSON"):
        read_sequences(str(path))


@pytest.mark.parametrize(
    ("sequence_bytes", "attribute_bytes"),
    [
        pytest.param(b"u1 1 2\nu2 3 \xe9\n", None, id="latin-1-byte-in-sequence-file"),
        pytest.param(b"u1 1 2\n", b'{"1": "caf\xe9"}', id="latin-1-byte-in-attribute-file"),
        pytest.param(b"u1 1 2\n", b"[1, 2]", id="attribute-file-is-a-list"),
    ],
)
def test_undecodable_or_misshapen_files_raise_input_data_error(
    tmp_path: Path, sequence_bytes: bytes, attribute_bytes: bytes | None
) -> None:
    path = tmp_path / "Shop.txt"
    path.write_bytes(sequence_bytes)
    if attribute_bytes is not None:
        (tmp_path / "Shop_item2attributes.json").write_bytes(attribute_bytes)

    with pytest.raises(InputDataError, match="Shop"):
        read_sequences(str(path))


def test_missing_sequence_file_raises_input_data_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="sequence file not found"):
        read_sequences(str(tmp_path / "absent.txt"))


def distinct_counts(interactions: pa.Table) -> tuple[int, int, int]:
    return (
        interactions.num_rows,
        pc.count_distinct(interactions["user_id"]).as_py(),
        pc.count_distinct(interactions["item_id"]).as_py(),
    )


@pytest.mark.skipif(not MOVIELENS_100K.is_dir(), reason="MovieLens-100K is not in ../shared/data")
def test_real_movielens_100k_has_the_published_size() -> None:
    interactions, items = read_movielens_100k(str(MOVIELENS_100K))

    assert distinct_counts(interactions) == (100_000, 943, 1_682)
    assert items.num_rows == 1_682
    assert items.slice(0, 1).to_pylist() == [{"item_id": 1, "title": "Toy Story (1995)", "attributes": [3, 4, 5]}]
    assert set(interactions["rating"].unique().to_pylist()) == {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.skipif(not AMAZON_BEAUTY.is_file(), reason="Amazon Beauty is not in ../shared/data")
def test_real_amazon_beauty_has_the_published_size() -> None:
    interactions, items = read_sequences(str(AMAZON_BEAUTY))

    assert distinct_counts(interactions) == (198_502, 22_363, 12_101)
    assert items.num_rows == 12_101
    assert pc.sum(pc.list_value_length(items["attributes"]).cast(pa.int64()).fill_null(0)).as_py() > 12_101


def write_movielens_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in RATINGS))
    (folder / "movies.dat").write_bytes(
        "10::Café Society (1995)::Comedy|Drama\n20::Toy Story (1995)::Animation|Comedy\n".encode("latin-1")
    )
    return folder


def test_movielens_1m_double_colon_files_are_read_with_genre_ids(tmp_path: Path) -> None:
    interactions, items = read_movielens_1m(str(write_movielens_1m(tmp_path / "ml-1m")))
    assert interactions.schema == INTERACTIONS_SCHEMA
    assert interactions.to_pylist()[0] == {"user_id": "1", "item_id": 10, "timestamp": 881250949, "rating": 5.0}
    # Genre ids follow the sorted genre names: Animation=0, Comedy=1, Drama=2.
    assert items.to_pylist() == [
        {"item_id": 10, "title": "Café Society (1995)", "attributes": [1, 2]},
        {"item_id": 20, "title": "Toy Story (1995)", "attributes": [0, 1]},
    ]


def test_movielens_1m_with_a_missing_field_names_the_file(tmp_path: Path) -> None:
    folder = write_movielens_1m(tmp_path / "ml-1m")
    (folder / "ratings.dat").write_text("1::10::5::881250949\n1::20::3\n")
    with pytest.raises(InputDataError, match="ratings.dat .* not valid '::'-separated text"):
        read_movielens_1m(str(folder))


def test_movielens_25m_csv_with_quoted_titles(tmp_path: Path) -> None:
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.5,1147880044\n2,20,3.0,1147868817\n")
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1995)",Comedy|Drama|Romance\n20,Shorts (2009),'
        "(no genres listed)\n"
    )
    interactions, items = read_movielens_csv(str(folder))
    assert interactions["rating"].to_pylist() == [4.5, 3.0]
    assert items.to_pylist() == [
        {"item_id": 10, "title": "American President, The (1995)", "attributes": [0, 1, 2]},
        {"item_id": 20, "title": "Shorts (2009)", "attributes": []},
    ]


def test_a_generic_csv_with_a_column_mapping_and_iso_times(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("customer,sku,when\nalice,7,2024-03-01T10:00:00\nbob,9,2024-03-02T11:30:00\n")
    interactions, items = read_table(
        str(path), ColumnMapping(user="customer", item="sku", timestamp="when", rating=None)
    )
    assert interactions.to_pylist() == [
        {"user_id": "alice", "item_id": 7, "timestamp": 1709287200, "rating": 1.0},
        {"user_id": "bob", "item_id": 9, "timestamp": 1709379000, "rating": 1.0},
    ]
    assert items["item_id"].to_pylist() == [7, 9]


def test_a_generic_parquet_file_with_a_timestamp_column(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": [1, 2],
                "item_id": [3, 4],
                "timestamp": pa.array([1_700_000_000_000, 1_700_000_060_000], pa.timestamp("ms")),
                "rating": [2, 5],
            }
        ),
        path,
    )
    interactions, _ = read_table(str(path), ColumnMapping())
    assert interactions["user_id"].to_pylist() == ["1", "2"]
    assert interactions["timestamp"].to_pylist() == [1_700_000_000, 1_700_000_060]
    assert interactions["rating"].to_pylist() == [2.0, 5.0]


@pytest.mark.parametrize(
    ("text", "mapping", "message"),
    [
        ("user_id,item\n1,2\n", ColumnMapping(), "has no column 'item_id', 'timestamp', 'rating'"),
        ("user_id,item_id,timestamp,rating\n1,B00X,5,4\n", ColumnMapping(), "item ids in column 'item_id'"),
        ("user_id,item_id,timestamp,rating\n1,2,yesterday,4\n", ColumnMapping(), "neither unix seconds"),
    ],
)
def test_generic_table_problems_name_the_column(tmp_path: Path, text: str, mapping: ColumnMapping, message: str):
    path = tmp_path / "events.csv"
    path.write_text(text)
    with pytest.raises(InputDataError, match=message):
        read_table(str(path), mapping)


def test_event_types_count_as_the_ratings_they_are_mapped_to_and_attributes_are_collected(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "visitor": ["a", "a", "b"],
                "product": [1, 2, 1],
                "ts": [1_700_000_000, 1_700_000_100, 1_700_000_200],
                "action": ["view", "purchase", "view"],
                "category": [[7], [8, 9], [7, 6]],
            }
        ),
        path,
    )
    mapping = ColumnMapping(
        user="visitor",
        item="product",
        timestamp="ts",
        event="action",
        event_ratings={"view": 1, "purchase": 5},
        attributes="category",
    )
    interactions, items = read_table(str(path), mapping)
    assert interactions["rating"].to_pylist() == [1.0, 5.0, 1.0]
    assert items.to_pylist() == [
        {"item_id": 1, "title": None, "attributes": [6, 7]},
        {"item_id": 2, "title": None, "attributes": [8, 9]},
    ]


def test_an_unmapped_event_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,kind,shelf\nu,1,1700000000,view,3\nu,2,1700000001,refund,4\n")
    mapping = ColumnMapping(event="kind", event_ratings={"view": 1}, attributes="shelf")
    with pytest.raises(InputDataError, match=r"event types \['refund'\] in column 'kind'"):
        read_table(str(path), mapping)
    assert read_table(str(path), mapping.model_copy(update={"event_ratings": {"view": 1, "refund": 0}}))[1][
        "attributes"
    ].to_pylist() == [[3], [4]]


def test_an_event_column_needs_its_ratings() -> None:
    with pytest.raises(ValueError, match="an event column needs event_ratings"):
        ColumnMapping(event="kind")


TABLE = "user_id,item_id,timestamp,rating\nu1,10,1700000000,4\nu2,20,1700000060,5\n"


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, bz2.compress, lzma.compress, lambda data: data],
    ids=["gzip", "bz2", "xz", "plain"],
)
def test_compressed_files_are_read_by_their_leading_bytes_whatever_their_name(tmp_path: Path, compress) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(compress(TABLE.encode()))
    interactions, _ = read_table(str(path), ColumnMapping())
    assert interactions["item_id"].to_pylist() == [10, 20]


def test_a_parquet_file_is_known_by_its_leading_bytes(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"  # misnamed
    pq.write_table(pa.table({"user_id": ["u"], "item_id": [3], "timestamp": [1_700_000_000], "rating": [4.0]}), path)
    assert read_table(str(path), ColumnMapping())[0]["item_id"].to_pylist() == [3]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04rest of a zip archive", "is a zip archive: unpack it first"),
        (b"(\xb5/\xfdzstd frame", "is zstd-compressed: unpack it first"),
        (gzip.compress(TABLE.encode() * 50)[:-30], "cannot be read: Compressed file ended before the end-of-stream"),
    ],
    ids=["zip", "zstd", "truncated gzip"],
)
def test_archives_that_cannot_be_read_as_they_are_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=message):
        read_table(str(path), ColumnMapping())


def test_a_truncated_archive_never_aborts_the_process_that_reads_it(tmp_path: Path) -> None:
    """pyarrow's reader threads once outlived the decompressor's error and aborted about one process in four at exit
    (SIGABRT, "terminate called without an active exception"): twenty processes in a row must all exit cleanly."""
    path = tmp_path / "events.csv"
    path.write_bytes(gzip.compress(TABLE.encode() * 2000)[:-30])
    code = (
        "from recsys_tasks.data.config import ColumnMapping\n"
        "from recsys_tasks.data.sources import read_table\n"
        "from recsys_tasks.errors import InputDataError\n"
        "try:\n"
        f"    read_table({str(path)!r}, ColumnMapping())\n"
        "except InputDataError:\n"
        "    pass\n"
    )
    exits = [subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode for _ in range(20)]
    assert exits == [0] * 20


def test_a_folder_where_a_file_belongs_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "events.csv").mkdir()
    with pytest.raises(InputDataError, match="events.csv cannot be read: Is a directory"):
        read_table(str(tmp_path / "events.csv"), ColumnMapping())


def test_an_unreadable_file_is_one_line_not_a_traceback(request) -> None:
    """Read as an unprivileged user (root reads any file): in a forked child that drops to ``nobody``."""
    folder = Path(tempfile.mkdtemp())  # pytest's own folders are closed to other users
    folder.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(folder))
    path = folder / "events.csv"
    path.write_text(TABLE)
    path.chmod(0o000)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe and never returns)
        os.close(reader)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            read_table(str(path), ColumnMapping())
            report = "read"
        except InputDataError as exc:
            report = f"InputDataError: {exc}"
        except BaseException as exc:  # noqa: BLE001 (anything else is the failure this test looks for)
            report = f"{type(exc).__name__}: {exc}"
        os.write(writer, report.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        report = pipe.read()
    os.waitpid(child, 0)
    assert report == f"InputDataError: interaction table at {path} cannot be read: Permission denied"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TABLE + "u3,30,1700000120,4,RAW\n", "line 4 has 5 fields instead of 4"),
        (TABLE + "user_id,item_id,timestamp,rating\nu3,30,1700000120,4\n", "repeats its header on line 4"),
        (
            "user_id,item_id,timestamp,rating\nu1,1,2024-03-01T10:00:00Z,4\nu2,2,NULL,4\nu3,3,2024-03-01T11:00:00,4\n",
            r"mixes ISO-8601 times with a zone \(first on row 1\) and without one \(first on row 3\)",
        ),
        (
            "user_id,item_id,timestamp,rating\nalice,7,1700000000,4\n7,alice,1700000001,4\n",
            "user and item look swapped",
        ),
    ],
    ids=["extra field", "repeated header", "mixed zones", "swapped text ids"],
)
def test_table_problems_name_the_line_or_the_cause_never_the_content(tmp_path: Path, text: str, message: str):
    path = tmp_path / "events.csv"
    path.write_text(text)
    with pytest.raises(InputDataError, match=message) as raised:
        read_table(str(path), ColumnMapping())
    assert "RAW" not in str(raised.value) and "alice" not in str(raised.value)


def test_null_like_tokens_are_nulls_in_every_column_and_source(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,timestamp,rating\nNULL,1,1700000000,4\n nan ,2,1700000000,4\nNone,None,,4\n,4,5,6\n"
    )
    interactions, _ = read_table(str(path), ColumnMapping())
    assert interactions["user_id"].to_pylist() == [None] * 4
    assert interactions["item_id"].to_pylist() == [1, 2, None, 4]
    assert interactions["timestamp"].to_pylist() == [1_700_000_000, 1_700_000_000, None, 5]
    folder = write_movielens(tmp_path / "ml", "NULL\t10\t4\t881250949\nnan\t20\t3\t881250950\nalice\tNone\t4\t1\n")
    assert read_movielens_100k(str(folder))[0]["user_id"].to_pylist() == [None, None, "alice"]
    assert read_sequences(str(write_sequences(tmp_path, ["None 1 2 3", "bob 4 5"])))[0]["user_id"].to_pylist() == [
        None,
        None,
        None,
        "bob",
        "bob",
    ]


def test_a_value_that_does_not_convert_is_named_by_line_and_column_not_shown(tmp_path: Path) -> None:
    folder = write_movielens(tmp_path / "ml", "1\t10\t4\t881250949\n2\t20\t3\t881250950\n3\tRAW-7\t4\t881250951\n")
    with pytest.raises(InputDataError, match="line 3: item_id is not an integer$"):
        read_movielens_100k(str(folder))


@pytest.mark.parametrize(
    "reason",
    [
        "CSV parse error: Row #3: Expected 4 columns, got 5: RAW-1,2,3,4,5",
        "In CSV column #1: CSV conversion error to int64: invalid value 'RAW-1'",
    ],
)
def test_any_pyarrow_reason_that_reaches_a_message_loses_the_offending_text(reason: str) -> None:
    assert "RAW" not in _parse_problem(ValueError(reason))


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_an_id_column_of_lists_is_named_not_a_traceback(tmp_path: Path, column: str) -> None:
    values = {"user_id": ["u1", "u2"], "item_id": [1, 2], "timestamp": [1_700_000_000] * 2, "rating": [4.0] * 2}
    values[column] = [[1], [2]]
    pq.write_table(pa.table(values), tmp_path / "events.parquet")
    with pytest.raises(InputDataError, match=f"ids in column '{column}'"):
        read_table(str(tmp_path / "events.parquet"), ColumnMapping())


def test_a_period_file_is_read_as_sessions_of_their_own_on_a_clock_of_its_period(tmp_path: Path) -> None:
    folder = tmp_path / "periods"
    folder.mkdir()
    (folder / "period_2.txt").write_text("7 10\n8 11\n\n7 12\n")

    events = read_period(str(folder / "period_2.txt"), 2)

    assert events.schema == INTERACTIONS_SCHEMA
    assert events["user_id"].to_pylist() == ["2:7", "2:8", "2:7"]
    assert events["item_id"].to_pylist() == [10, 11, 12]
    start = PERIOD_CLOCK_START + 2 * PERIOD_SECONDS
    assert events["timestamp"].to_pylist() == [start, start + 1, start + 2]
    assert events["rating"].to_pylist() == [1.0] * 3


def test_period_files_are_ordered_by_their_number(tmp_path: Path) -> None:
    for name in ("period_10.txt", "period_2.txt", "period_0.txt", "notes.txt", "period_3.txt.bak"):
        (tmp_path / name).write_text("1 1\n")

    assert [(number, Path(uri).name) for number, uri in period_files(str(tmp_path))] == [
        (0, "period_0.txt"),
        (2, "period_2.txt"),
        (10, "period_10.txt"),
    ]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (None, "period folder not found at "),
        ({"notes.txt": "1 1\n"}, "holds no period_N.txt files"),
        ({"period_1.txt": "1 1\n", "period_01.txt": "1 1\n"}, "holds two files of one period"),
        ({"period_0.txt": "7 10\n7\t11\n"}, r"period file period_0.txt at .* line 2 has 1 fields instead of 2"),
        ({"period_0.txt": "7 ten\n"}, "line 1: item_id is not an integer"),
    ],
    ids=["no folder", "no period file", "a period twice", "a line of one field", "an item id that is no number"],
)
def test_period_folder_problems_are_one_line(tmp_path: Path, files: dict | None, message: str) -> None:
    folder = tmp_path / "periods"
    for name, text in (files or {}).items():
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text)

    with pytest.raises(InputDataError, match=message) as raised:
        for number, uri in period_files(str(folder)):
            read_period(uri, number)
    assert "\n" not in str(raised.value)


@pytest.mark.skipif(not DIGINETICA_PERIODS.is_dir(), reason="DIGINETICA periods are not in ../shared/data")
def test_the_first_two_real_diginetica_periods_are_read_in_order() -> None:
    files = period_files(str(DIGINETICA_PERIODS))
    assert [number for number, _ in files] == list(range(17))

    first, second = (read_period(uri, number) for number, uri in files[:2])

    assert (first.num_rows, second.num_rows) == (70_739, 37_586)
    assert (pc.count_distinct(first["user_id"]).as_py(), pc.count_distinct(second["user_id"]).as_py()) == (
        15_076,
        7_896,
    )
    assert pc.max(first["timestamp"]).as_py() < pc.min(second["timestamp"]).as_py()
    shared_items = set(first["item_id"].to_pylist()) & set(second["item_id"].to_pylist())
    assert 0 < len(shared_items) < pc.count_distinct(second["item_id"]).as_py()
