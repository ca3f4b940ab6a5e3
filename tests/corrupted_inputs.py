"""A corpus of broken inputs, and of awkward but well-formed ones, each with where the pipeline must stop.

Every case writes its files (MovieLens ``u.data``, a generic CSV table or an S3-Rec sequence file) into a
folder and runs ``recsys ingest`` → ``validate`` → ``augment`` as separate commands, as a person would.
Used by tests/test_corrupted_inputs.py (which benchmarks/corrupted_inputs.py runs to print the table) and
tests/data/test_privacy.py.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import run_command

USERS, ITEMS, EVENTS_PER_USER = 40, 60, 12
FIRST_EVENT = 1_700_000_000  # November 2023
# Table and sequence cases name their users like this, so that a leaked raw id can be found in any output.
RAW_USER = "RAWUSER"
STAGES = ("ingest", "validate", "augment")
PASSED = "passed"
Row = tuple[str, str, str, str]
Writer = Callable[[Path], dict]  # writes a case's files under a folder and returns its Params


def clean_rows() -> list[Row]:
    """40 users × 12 distinct items, ratings 1..5, one event an hour per user, spread over 20 days."""
    return [
        (
            str(user),
            str((user * 7 + step) % ITEMS + 1),
            str(1 + (user + step) % 5),
            str(FIRST_EVENT + user * 43_200 + step * 3_600),
        )
        for user in range(USERS)
        for step in range(EVENTS_PER_USER)
    ]


def tab_separated(rows: list[Row]) -> bytes:
    return "".join("\t".join(row) + "\n" for row in rows).encode()


def changed(change: Callable[[Row], Row], every: int = 10) -> list[Row]:
    return [change(row) if index % every == 0 else row for index, row in enumerate(clean_rows())]


def with_row_changed(change: Callable[[Row], Row], every: int = 10) -> bytes:
    return tab_separated(changed(change, every))


def flood_of_duplicates() -> bytes:
    rows = clean_rows()
    return tab_separated(rows + rows[:60])


def one_user_dominates() -> bytes:
    bot = [("bot", str(item % ITEMS + 1), "5", str(FIRST_EVENT + 60 * item)) for item in range(400)]
    return tab_separated(clean_rows() + bot)


def a_day_with_ten_times_the_volume() -> bytes:
    crowd = [
        (f"crowd-{user}", str((user + step) % ITEMS + 1), "4", str(FIRST_EVENT + 30 * 86_400 + user * 60 + step))
        for user in range(120)
        for step in range(EVENTS_PER_USER)
    ]
    return tab_separated(clean_rows() + crowd)


def write_movielens(folder: Path, ratings: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_bytes(ratings)
    genres = "|".join(["0"] * 19)
    (folder / "u.item").write_bytes(
        "".join(f"{item}|Film {item}|01-Jan-1995||http://x|{genres}\n" for item in range(1, ITEMS + 1)).encode()
    )


def movielens(ratings: Callable[[], bytes]) -> Writer:
    def write(folder: Path) -> dict:
        write_movielens(folder, ratings())
        return {"data_source": "movielens-100k", "data_path": str(folder)}

    return write


def zip_archive(content: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("u.data", content)
    return archive.getvalue()


def u_data_is_a_folder(folder: Path) -> dict:
    write_movielens(folder, b"")
    (folder / "u.data").unlink()
    (folder / "u.data").mkdir()
    return {"data_source": "movielens-100k", "data_path": str(folder)}


TABLE_HEADER = "user_id,item_id,timestamp,rating"


def table_lines(iso_separator: str = "T", zone: str = "") -> list[str]:
    """The clean rows as a CSV table: named users, ISO-8601 times."""

    def iso(seconds: str) -> str:
        return datetime.fromtimestamp(int(seconds), UTC).strftime(f"%Y-%m-%d{iso_separator}%H:%M:%S") + zone

    return [f"{RAW_USER}-{user},{item},{iso(time)},{rating}" for user, item, rating, time in clean_rows()]


def table(lines: Callable[[], list[str]], encode: Callable[[str], bytes] = str.encode) -> Writer:
    def write(folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "events.csv").write_bytes(encode("\n".join([TABLE_HEADER, *lines()]) + "\n"))
        return {"data_source": "table", "data_path": str(folder / "events.csv")}

    return write


def with_fields_changed(lines: list[str], change: Callable[[list[str], int], list[str]], every: int) -> list[str]:
    """Every ``every``-th line (from the first) passed through ``change(fields, line index)``."""
    return [
        ",".join(change(line.split(","), index)) if index % every == 0 else line for index, line in enumerate(lines)
    ]


def swapped_table() -> list[str]:
    return with_fields_changed(table_lines(), lambda fields, _: [fields[1], fields[0], *fields[2:]], every=10)


def null_like_user_ids() -> list[str]:
    tokens = ["NULL", "nan", "None", ""]
    return with_fields_changed(table_lines(), lambda fields, index: [tokens[index // 10 % 4], *fields[1:]], every=10)


def mixed_zones() -> list[str]:
    """Every other time written with a "Z" (UTC), the rest without a zone."""
    return with_fields_changed(table_lines(), lambda fields, _: [*fields[:2], fields[2] + "Z", *fields[3:]], every=2)


def header_repeated() -> list[str]:
    lines = table_lines()
    return [*lines[:200], TABLE_HEADER, *lines[200:]]


def sequences(text: Callable[[], str], encode: Callable[[str], bytes] = str.encode) -> Writer:
    def write(folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Shop.txt").write_bytes(encode(text()))
        return {"data_source": "sequence", "data_path": str(folder / "Shop.txt")}

    return write


def sequence_text() -> str:
    histories: dict[str, list[str]] = {}
    for user, item, _, _ in clean_rows():
        histories.setdefault(f"{RAW_USER}-{user}", []).append(item)
    return "".join(f"{user} {' '.join(items)}\n" for user, items in histories.items())


def utf8_with_bom_and_crlf(text: str) -> bytes:
    return "\ufeff".encode() + text.replace("\n", "\r\n").encode()


def concentrated() -> bytes:
    """Nine in ten events on item 1; each user's events keep distinct times, so none is a duplicate."""
    return tab_separated([(row[0], "1", *row[2:]) if index % 10 else row for index, row in enumerate(clean_rows())])


@dataclass(frozen=True)
class Case:
    kind: str
    write: Writer
    stops_at: str  # a stage of STAGES, or PASSED
    message: str = ""  # a fragment the one-line error must contain
    baseline: Writer | None = None  # clean data accepted first, so that drift is measured against it


def every_event_at_one_time(row: Row) -> Row:
    return (*row[:3], str(FIRST_EVENT))


CORPUS = [
    Case("empty file", movielens(lambda: b""), "ingest", "u.data at"),
    Case("missing column", movielens(lambda: with_row_changed(lambda r: r[:3])), "ingest", "line 1 has 3 fields"),
    Case(
        "wrong types",
        movielens(lambda: with_row_changed(lambda r: (r[0], "abc", r[2], r[3]))),
        "ingest",
        "line 1: item_id is not an integer",
    ),
    Case(
        "null ids",
        movielens(lambda: with_row_changed(lambda r: (r[0], "", r[2], r[3]))),
        "validate",
        "expect_column_values_to_not_be_null(item_id)",
    ),
    Case(
        "negative ids",
        movielens(lambda: with_row_changed(lambda r: (r[0], "-" + r[1], r[2], r[3]))),
        "validate",
        "expect_column_values_to_be_between(item_id)",
    ),
    Case(
        "ratings out of range",
        movielens(lambda: with_row_changed(lambda r: (r[0], r[1], "11", r[3]))),
        "validate",
        "expect_column_values_to_be_between(rating)",
    ),
    Case(
        "timestamps in the future",
        movielens(lambda: with_row_changed(lambda r: (*r[:3], "4102444800"))),
        "validate",
        "expect_column_values_to_be_between(timestamp)",
    ),
    Case(
        "timestamps at 1970",
        movielens(lambda: with_row_changed(lambda r: (*r[:3], "0"))),
        "validate",
        "expect_column_values_to_be_between(timestamp)",
    ),
    Case(
        "flood of duplicated rows",
        movielens(flood_of_duplicates),
        "validate",
        "expect_compound_columns_to_be_unique(user_id,item_id,timestamp)",
    ),
    Case(
        "one user holds most interactions",
        movielens(one_user_dominates),
        "validate",
        "one user holds too large a share of all interactions",
    ),
    # The last line is "39<TAB>item<TAB>rating<TAB>timestamp": cut after the item, or inside the timestamp.
    Case(
        "truncated last line (fields lost)",
        movielens(lambda: tab_separated(clean_rows())[:-14]),
        "ingest",
        "line 480 has 2 fields instead of 4",
    ),
    Case(
        "truncated last line (inside a value)",
        movielens(lambda: tab_separated(clean_rows())[:-9]),
        "validate",
        "expect_column_values_to_be_between(timestamp)",
    ),
    Case(
        "wrong delimiter",
        movielens(lambda: tab_separated(clean_rows()).replace(b"\t", b",")),
        "ingest",
        "line 1 has 1 fields instead of 4 (wrong delimiter or encoding?)",
    ),
    Case(
        "wrong encoding (UTF-16)",
        movielens(lambda: tab_separated(clean_rows()).decode().encode("utf-16")),
        "ingest",
        "wrong delimiter or encoding",
    ),
    Case(
        "unexpected extra column",
        movielens(lambda: with_row_changed(lambda r: (*r, "extra"))),
        "ingest",
        "line 1 has 5 fields instead of 4; 47 more such lines",
    ),
    Case(
        "a day with 10× the usual volume",
        movielens(a_day_with_ten_times_the_volume),
        "validate",
        "expect_column_max_to_be_between(daily_volume_ratio)",
        baseline=movielens(lambda: tab_separated(clean_rows())),
    ),
    Case(
        "table: a line with one field too many",
        table(lambda: [*table_lines()[:9], table_lines()[9] + ",extra", *table_lines()[10:]]),
        "ingest",
        "line 11 has 5 fields instead of 4",
    ),
    Case(
        "every event at one timestamp",
        movielens(lambda: with_row_changed(every_event_at_one_time, every=1)),
        "validate",
        "too many events share one timestamp",
    ),
    Case(
        "each user's events all at one timestamp",
        movielens(lambda: tab_separated([(*row[:3], str(FIRST_EVENT + int(row[0]) * 3_600)) for row in clean_rows()])),
        "validate",
        "too many users have all their events at one timestamp",
    ),
    Case(
        "one item holds 90% of all interactions",
        movielens(concentrated),
        "validate",
        "one item holds too large a share of all interactions",
    ),
    Case(
        "null-like user ids (NULL, nan, None, empty) in a table",
        table(null_like_user_ids),
        "validate",
        "expect_column_values_to_not_be_null(user_id) — 48 of 480 rows null",
    ),
    Case(
        "null-like user ids in MovieLens",
        movielens(lambda: with_row_changed(lambda r: ("NULL", *r[1:]))),
        "validate",
        "expect_column_values_to_not_be_null(user_id)",
    ),
    Case("u.data is a folder", u_data_is_a_folder, "ingest", "u.data cannot be read: Is a directory"),
    Case(
        "a zip archive named u.data",
        movielens(lambda: zip_archive(tab_separated(clean_rows()))),
        "ingest",
        "is a zip archive: unpack it first",
    ),
    Case(
        "a truncated gzip file",
        movielens(lambda: gzip.compress(tab_separated(clean_rows()))[:-40]),
        "ingest",
        "cannot be read: Compressed file ended before the end-of-stream marker was reached",
    ),
    Case(
        "zoned and naive ISO-8601 times mixed",
        table(mixed_zones),
        "ingest",
        "mixes ISO-8601 times with a zone (first on row 1) and without one (first on row 2)",
    ),
    Case("the header repeated mid-file", table(header_repeated), "ingest", "repeats its header on line 202"),
    Case(
        "user and item swapped in 10% of rows (integer ids)",
        movielens(lambda: with_row_changed(lambda r: (r[1], r[0], *r[2:]))),
        "validate",
        "user and item look swapped in some rows",
    ),
    Case(
        "user and item swapped in 10% of rows (named users)",
        table(swapped_table),
        "ingest",
        "48 rows hold other text, 48 of them values of the user column 'user_id': user and item look swapped",
    ),
    # Well-formed variants that must pass the gate.
    Case("clean MovieLens", movielens(lambda: tab_separated(clean_rows())), PASSED),
    Case(
        "MovieLens with a UTF-8 BOM and CRLF line ends",
        movielens(lambda: utf8_with_bom_and_crlf(tab_separated(clean_rows()).decode())),
        PASSED,
    ),
    Case("gzip-compressed u.data", movielens(lambda: gzip.compress(tab_separated(clean_rows()))), PASSED),
    Case("table with ISO times, T separator", table(table_lines), PASSED),
    Case("table with ISO times, space separator", table(lambda: table_lines(iso_separator=" ")), PASSED),
    Case("table with zoned ISO times", table(lambda: table_lines(zone="+02:00")), PASSED),
    Case(
        "table with a UTF-8 BOM, CRLF line ends and unicode user ids",
        table(
            lambda: [line.replace(RAW_USER, f"{RAW_USER}-Zoë-用户") for line in table_lines()], utf8_with_bom_and_crlf
        ),
        PASSED,
    ),
    Case("gzip-compressed table named .csv", table(table_lines, lambda text: gzip.compress(text.encode())), PASSED),
    Case("sequence file with a UTF-8 BOM and CRLF line ends", sequences(sequence_text, utf8_with_bom_and_crlf), PASSED),
]


@dataclass(frozen=True)
class Outcome:
    stage: str  # the stage that stopped the run, or PASSED
    message: str  # its one-line error, without "error: "
    exit_code: int
    output: str  # stdout and stderr of every command run
    params: dict  # the Params the stages ran with


def run_case(case: Case, folder: Path, home: Path, run_id: str) -> Outcome:
    """Write the case's files and run the stages as separate ``recsys`` commands until one fails.

    A case with a baseline first has its clean data accepted by the run ``<run_id>-baseline``.
    """
    if case.baseline is not None:
        baseline = run_stages(case.baseline(folder), f"{run_id}-baseline", home)
        assert baseline.stage == PASSED, f"the clean baseline must pass first: {baseline.message}"
    return run_stages(case.write(folder), run_id, home)


def run_stages(params: dict, run_id: str, home: Path) -> Outcome:
    output = ""
    for stage in STAGES:
        result = run_command(
            "recsys", stage, "--run-id", run_id, "--conf", json.dumps(params), env={"ADAPTREC_HOME": str(home)}
        )
        output += result.stdout + result.stderr
        if result.returncode != 0:
            last_line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
            return Outcome(stage, last_line.removeprefix("error: "), result.returncode, output, params)
    return Outcome(PASSED, "", 0, output, params)
