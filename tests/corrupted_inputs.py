"""A corpus of broken MovieLens-format inputs, each with where the pipeline must stop and what it must say.

Shared by tests/test_corrupted_inputs.py and benchmarks/corrupted_inputs.py (which prints the table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recsys_tasks.errors import AdaptRecError
from recsys_tasks.pipeline import run_stage
from recsys_tasks.settings import Settings

USERS, ITEMS, EVENTS_PER_USER = 40, 60, 12
FIRST_EVENT = 1_700_000_000  # November 2023
Row = tuple[str, str, str, str]


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


def with_row_changed(change: Callable[[Row], Row], every: int = 10) -> bytes:
    return tab_separated([change(row) if index % every == 0 else row for index, row in enumerate(clean_rows())])


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


@dataclass(frozen=True)
class Corruption:
    kind: str
    ratings_file: Callable[[], bytes]
    stops_at: str
    message: str  # a fragment the one-line error must contain
    needs_accepted_baseline: bool = False


CORPUS = [
    Corruption("empty file", lambda: b"", "ingest", "u.data at"),
    Corruption(
        "missing column", lambda: with_row_changed(lambda r: r[:3]), "ingest", "a line has 3 fields instead of 4"
    ),
    Corruption("wrong types", lambda: with_row_changed(lambda r: (r[0], "abc", r[2], r[3])), "ingest", "abc"),
    Corruption(
        "null ids",
        lambda: with_row_changed(lambda r: (r[0], "", r[2], r[3])),
        "validate",
        "expect_column_values_to_not_be_null(item_id)",
    ),
    Corruption(
        "negative ids",
        lambda: with_row_changed(lambda r: (r[0], "-" + r[1], r[2], r[3])),
        "validate",
        "expect_column_values_to_be_between(item_id)",
    ),
    Corruption(
        "ratings out of range",
        lambda: with_row_changed(lambda r: (r[0], r[1], "11", r[3])),
        "validate",
        "expect_column_values_to_be_between(rating)",
    ),
    Corruption(
        "timestamps in the future",
        lambda: with_row_changed(lambda r: (*r[:3], "4102444800")),
        "validate",
        "expect_column_values_to_be_between(timestamp)",
    ),
    Corruption(
        "timestamps at 1970",
        lambda: with_row_changed(lambda r: (*r[:3], "0")),
        "validate",
        "expect_column_values_to_be_between(timestamp)",
    ),
    Corruption(
        "flood of duplicated rows",
        flood_of_duplicates,
        "validate",
        "expect_compound_columns_to_be_unique(user_id,item_id,timestamp)",
    ),
    Corruption(
        "one user holds most interactions",
        one_user_dominates,
        "validate",
        "expect_column_max_to_be_between(share_of_interactions)",
    ),
    # The last line is "39<TAB>item<TAB>rating<TAB>timestamp": cut after the item, or inside the timestamp.
    Corruption(
        "truncated last line (fields lost)",
        lambda: tab_separated(clean_rows())[:-14],
        "ingest",
        "a line has 2 fields instead of 4",
    ),
    Corruption(
        "truncated last line (inside a value)",
        lambda: tab_separated(clean_rows())[:-9],
        "validate",
        "expect_column_values_to_be_between(timestamp)",
    ),
    Corruption(
        "wrong delimiter",
        lambda: tab_separated(clean_rows()).replace(b"\t", b","),
        "ingest",
        "a line has 1 fields instead of 4 (wrong delimiter or encoding?)",
    ),
    Corruption(
        "wrong encoding (UTF-16)",
        lambda: tab_separated(clean_rows()).decode().encode("utf-16"),
        "ingest",
        "wrong delimiter or encoding",
    ),
    Corruption(
        "unexpected extra column",
        lambda: with_row_changed(lambda r: (*r, "extra")),
        "ingest",
        "a line has 5 fields instead of 4",
    ),
    Corruption(
        "a day with 10× the usual volume",
        a_day_with_ten_times_the_volume,
        "validate",
        "expect_column_max_to_be_between(daily_volume_ratio)",
        needs_accepted_baseline=True,
    ),
]


def write_movielens(folder: Path, ratings: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_bytes(ratings)
    genres = "|".join(["0"] * 19)
    (folder / "u.item").write_bytes(
        "".join(f"{item}|Film {item}|01-Jan-1995||http://x|{genres}\n" for item in range(1, ITEMS + 1)).encode()
    )


def stop_of(params: dict, run_id: str, settings: Settings) -> tuple[str, str]:
    """Run ingest and validate; return (stage that stopped the run or 'passed', its one-line message)."""
    for stage in ("ingest", "validate"):
        try:
            run_stage(stage, params, run_id, settings)
        except AdaptRecError as exc:
            return stage, str(exc)
    return "passed", ""


def run_corruption(corruption: Corruption, folder: Path, settings: Settings) -> tuple[str, str]:
    params = {"data_source": "movielens-100k", "data_path": str(folder)}
    if corruption.needs_accepted_baseline:
        write_movielens(folder, tab_separated(clean_rows()))
        assert stop_of(params, "baseline", settings) == ("passed", ""), "the clean data must pass first"
    write_movielens(folder, corruption.ratings_file())
    return stop_of(params, "corrupted", settings)
