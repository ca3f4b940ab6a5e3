"""User ids are pseudonymised at ingest, and no raw id reaches anything the pipeline writes."""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_tasks.contracts.layout import INTERACTIONS_FILE, RECOMMENDATIONS_FILE
from recsys_tasks.errors import ConfigError
from recsys_tasks.pipeline import run_pipeline
from recsys_tasks.privacy import local_key_file, pseudonymise, resolve_key
from recsys_tasks.settings import Settings
from recsys_tasks.storage import RunDir
from tests.corrupted_inputs import run_stages

RAW_ID_MARK = "RAWUSER"


def test_a_configured_key_wins(tmp_path):
    settings = Settings(home=tmp_path, pseudonymisation_key="configured")
    assert resolve_key(settings) == b"configured"
    assert not local_key_file(settings).exists()


def test_production_mode_refuses_to_invent_a_key(tmp_path):
    with pytest.raises(ConfigError, match="ADAPTREC_PSEUDONYMISATION_KEY"):
        resolve_key(Settings(home=tmp_path, mode="production"))
    assert not local_key_file(Settings(home=tmp_path)).exists()


def test_the_embedded_default_generates_one_private_key_and_keeps_it(tmp_path):
    settings = Settings(home=tmp_path)
    first, again = resolve_key(settings), resolve_key(settings)
    assert first == again and len(first) == 64
    assert stat.S_IMODE(local_key_file(settings).stat().st_mode) == 0o600
    assert resolve_key(Settings(home=tmp_path / "elsewhere")) != first


def test_pseudonyms_are_keyed_hashes_and_nulls_stay_null():
    raw = pa.chunked_array([["alice", "bob", None], ["alice"]])
    pseudonyms = pseudonymise(raw, b"key").to_pylist()
    assert pseudonyms[0] == pseudonyms[3] == hmac.new(b"key", b"alice", hashlib.sha256).hexdigest()[:32]
    assert pseudonyms[1] != pseudonyms[0] and pseudonyms[2] is None
    assert pseudonymise(raw, b"other key").to_pylist()[0] != pseudonyms[0]


def planted_movielens(folder: Path, users: int = 30, items: int = 40, per_user: int = 12) -> list[str]:
    """MovieLens-format files whose user ids are recognisable raw identifiers."""
    folder.mkdir()
    raw_ids = [f"{RAW_ID_MARK}-{user:04d}" for user in range(users)]
    lines = [
        f"{raw}\t{(user * 7 + step * 3) % items + 1}\t{1 + (user + step) % 5}\t{880000000 + 3600 * step}"
        for user, raw in enumerate(raw_ids)
        for step in range(per_user)
    ]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    genres = "|".join(["0"] * 19)
    (folder / "u.item").write_text(
        "".join(f"{item}|Film {item}|01-Jan-1995||http://x|{genres}\n" for item in range(1, items + 1)),
        encoding="latin-1",
    )
    return raw_ids


def texts_of(path: Path) -> str:
    """What a reader of the file could see: Parquet decoded to its values, anything else as raw bytes."""
    if path.suffix == ".parquet":
        return str(pq.read_table(path).to_pylist())
    return path.read_bytes().decode("latin-1")


def test_no_raw_user_id_survives_past_ingest(tmp_path, caplog, capsys):
    data = tmp_path / "movielens"
    raw_ids = planted_movielens(data)
    assert RAW_ID_MARK in texts_of(data / "u.data")  # the scanner sees a planted id where one is

    settings = Settings(home=tmp_path / "home")
    params = {
        "data_source": "movielens-100k",
        "data_path": str(data),
        "model_size": "tiny",
        "max_length": 10,
        "pretrain_epochs": 1,
        "finetune_epochs": 1,
        "batch_recommendations": True,  # its Parquet of every user's recommendations is scanned too
        "min_lift_over_popularity": 0.0,  # crowned whatever one epoch learnt, so the batch consumer runs
    }
    with caplog.at_level(logging.INFO):
        results = run_pipeline(params, "privacy-run", settings)
    assert results["batch_recommend"] is not None  # every stage of the run ran, batch recommendations too

    written = [path for path in settings.resolved_home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".parquet" for path in written) and any(path.name == "mlflow.db" for path in written)
    run = RunDir.for_run(settings.resolved_runs_uri, "privacy-run")
    assert run.exists(RECOMMENDATIONS_FILE)
    leaks = [str(path) for path in written if RAW_ID_MARK in texts_of(path)]
    assert leaks == []
    captured = capsys.readouterr()
    assert RAW_ID_MARK not in caplog.text + captured.out + captured.err
    interactions = run.read_parquet(INTERACTIONS_FILE)
    assert set(interactions["user_id"].to_pylist()) == set(
        pseudonymise(pa.array(raw_ids), resolve_key(settings)).to_pylist()
    )


def _movielens_with(folder: Path, line: str) -> dict:
    planted_movielens(folder)
    with (folder / "u.data").open("a") as fh:
        fh.write(line + "\n")
    return {"data_source": "movielens-100k", "data_path": str(folder)}


def _table_with(folder: Path, line: str) -> dict:
    folder.mkdir()
    rows = [f"{RAW_ID_MARK}-{user},{item},{1_700_000_000 + 60 * item},4" for user in range(30) for item in range(12)]
    (folder / "events.csv").write_text("\n".join(["user_id,item_id,timestamp,rating", *rows, line]) + "\n")
    return {"data_source": "table", "data_path": str(folder / "events.csv")}


def _sequences_with(folder: Path, line: str) -> dict:
    folder.mkdir()
    (folder / "Shop.txt").write_text(f"{RAW_ID_MARK}-1 1 2 3\n{line}\n")
    return {"data_source": "sequence", "data_path": str(folder / "Shop.txt")}


BROKEN_INPUTS = {
    "MovieLens line with an extra field": (_movielens_with, f"{RAW_ID_MARK}-9\t3\t4\t880000000\textra"),
    "MovieLens raw id where the item belongs": (_movielens_with, f"7\t{RAW_ID_MARK}-9\t4\t880000000"),
    "MovieLens raw id where the time belongs": (_movielens_with, f"{RAW_ID_MARK}-9\t3\t4\t{RAW_ID_MARK}"),
    "MovieLens line cut short": (_movielens_with, f"{RAW_ID_MARK}-9"),
    "table line with an extra field": (_table_with, f"{RAW_ID_MARK}-9,3,1700000000,4,extra"),
    "table with user and item swapped": (_table_with, f"3,{RAW_ID_MARK}-9,1700000000,4"),
    "table raw id where the time belongs": (_table_with, f"{RAW_ID_MARK}-9,3,{RAW_ID_MARK},4"),
    "sequence raw id where an item belongs": (_sequences_with, f"{RAW_ID_MARK}-2 4 {RAW_ID_MARK}-3 5"),
    "duplicated events (stops at the data gate)": (
        _movielens_with,
        "\n".join([f"{RAW_ID_MARK}-0000\t1\t1\t880000000"] * 40),
    ),
}


@pytest.mark.usefixtures("no_inherited_mlflow")
@pytest.mark.parametrize(("write", "line"), BROKEN_INPUTS.values(), ids=BROKEN_INPUTS.keys())
def test_no_raw_user_id_is_echoed_by_a_broken_input(tmp_path, write, line):
    home = tmp_path / "home"
    outcome = run_stages(write(tmp_path / "input", line), "broken", home)
    assert (outcome.exit_code, outcome.stage in ("ingest", "validate")) == (2, True), outcome.output
    assert RAW_ID_MARK not in outcome.output
    written = [path for path in home.rglob("*") if path.is_file()]
    assert [str(path) for path in written if RAW_ID_MARK in texts_of(path)] == []
