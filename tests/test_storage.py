"""RunDir on a local temporary folder: atomic files, all-or-nothing folders, readable run keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from recsys_tasks.errors import InputDataError
from recsys_tasks.storage import RunDir, run_key


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return RunDir(str(tmp_path / "runs" / "run-1"))


def leftover_temporary_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if ".tmp-" in path.name or ".old-" in path.name]


def publish_folder(run: RunDir, name: str, files: dict[str, str]) -> None:
    with run.writing_folder(name) as folder:
        for file_name, text in files.items():
            (folder / file_name).write_text(text)


def folder_contents(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


def test_json_round_trip_creates_parent_folders(run: RunDir) -> None:
    document = {"metrics": {"ndcg_at_10": 0.25}, "users": [1, 2, 3], "name": "Café"}

    uri = run.write_json("stage/nested/summary.json", document)

    assert uri == f"{run.uri}/stage/nested/summary.json"
    assert run.exists("stage/nested/summary.json")
    assert run.read_json("stage/nested/summary.json") == document


def test_parquet_round_trip_keeps_schema_and_values(run: RunDir) -> None:
    table = pa.table(
        {
            "user_id": pa.array(["a", "b", "c"]),
            "item_id": pa.array([1, 2, 3], pa.int64()),
            "attributes": pa.array([[1], [], [2, 3]], pa.list_(pa.int64())),
            "rating": pa.array([1.5, None, 4.0], pa.float32()),
        }
    )

    run.write_parquet("data/table.parquet", table)

    assert run.read_parquet("data/table.parquet").equals(table)


def test_reading_a_missing_parquet_file_names_it(run: RunDir) -> None:
    with pytest.raises(InputDataError, match="data/absent.parquet"):
        run.read_parquet("data/absent.parquet")


def test_overwriting_a_file_is_atomic_and_leaves_no_temporary_files(run: RunDir, tmp_path: Path) -> None:
    for version in range(3):
        run.write_json("summary.json", {"version": version})
        run.write_text("notes.txt", f"version {version}")

    assert run.read_json("summary.json") == {"version": 2}
    assert Path(run.path("notes.txt")).read_text() == "version 2"
    assert leftover_temporary_files(tmp_path) == []


def test_writing_folder_publishes_with_success_marker(run: RunDir, tmp_path: Path) -> None:
    assert not run.folder_is_complete("model")

    publish_folder(run, "model", {"weights.txt": "first"})

    assert run.folder_is_complete("model")
    with run.reading_folder("model") as folder:
        assert folder_contents(folder) == {"_SUCCESS": "", "weights.txt": "first"}
    assert leftover_temporary_files(tmp_path) == []


def test_writing_folder_replaces_an_earlier_folder_completely(run: RunDir, tmp_path: Path) -> None:
    publish_folder(run, "model", {"weights.txt": "first", "stale.txt": "only in the first version"})

    publish_folder(run, "model", {"weights.txt": "second"})

    with run.reading_folder("model") as folder:
        assert folder_contents(folder) == {"_SUCCESS": "", "weights.txt": "second"}
    assert leftover_temporary_files(tmp_path) == []


def test_failure_inside_writing_folder_publishes_nothing(run: RunDir, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="training crashed"), run.writing_folder("model") as folder:
        (folder / "weights.txt").write_text("half written")
        raise RuntimeError("training crashed")

    assert not run.exists("model")
    assert not run.folder_is_complete("model")
    assert not folder.exists(), "the staging folder must be cleaned up"
    with pytest.raises(InputDataError, match="model"), run.reading_folder("model"):
        pass


def test_failure_inside_writing_folder_keeps_the_earlier_complete_folder(run: RunDir) -> None:
    publish_folder(run, "model", {"weights.txt": "good"})

    with pytest.raises(RuntimeError), run.writing_folder("model") as folder:
        (folder / "weights.txt").write_text("broken")
        raise RuntimeError("training crashed")

    with run.reading_folder("model") as published:
        assert folder_contents(published) == {"_SUCCESS": "", "weights.txt": "good"}


def test_reading_a_folder_without_success_marker_raises(run: RunDir) -> None:
    incomplete = Path(run.path("model"))
    incomplete.mkdir(parents=True)
    (incomplete / "weights.txt").write_text("copied by hand, never published")

    with pytest.raises(InputDataError, match="missing or incomplete"), run.reading_folder("model"):
        pass


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("manual__2026-11-28T13:59:48.989086+00:00", "manual__2026-11-28T13_59_48.989086_00_00"),
        ("scheduled__2026-01-01T00:00:00+00:00", "scheduled__2026-01-01T00_00_00_00_00"),
        ("already-safe_name.1", "already-safe_name.1"),
        ("::++", "run"),
    ],
)
def test_run_key_is_filesystem_safe_and_readable(run_id: str, expected: str) -> None:
    assert run_key(run_id) == expected


def test_for_run_places_the_run_under_its_key(tmp_path: Path) -> None:
    run = RunDir.for_run(f"{tmp_path}/runs/", "manual__2026-11-28T13:59:48.989086+00:00")

    assert run.uri == f"{tmp_path}/runs/manual__2026-11-28T13_59_48.989086_00_00"
    run.write_json("probe.json", {"ok": True})
    assert (tmp_path / "runs" / "manual__2026-11-28T13_59_48.989086_00_00" / "probe.json").is_file()


def test_scratch_is_an_existing_folder_inside_the_run_dir(run: RunDir) -> None:
    folder = run.scratch("pretrain/checkpoints")

    assert folder.is_dir()
    assert folder.resolve() == (Path(run.uri) / "pretrain" / "checkpoints").resolve()
    (folder / "checkpoint").write_text("epoch 1")
    assert run.scratch("pretrain/checkpoints") == folder, "a retry must find the same folder"
    assert (run.scratch("pretrain/checkpoints") / "checkpoint").read_text() == "epoch 1"


# ---------------------------------------------------------------- object stores (fsspec's in-memory filesystem)


@pytest.fixture
def remote_run(request: pytest.FixtureRequest) -> Iterator[RunDir]:
    run = RunDir(f"memory://adaptrec-tests/{request.node.name}")
    yield run
    if run.fs.exists(run.path("")):
        run.fs.rm(run.path(""), recursive=True)


def remote_files(run: RunDir, name: str) -> list[str]:
    root = run.path(name)
    return sorted(path.removeprefix(f"{root}/") for path in run.fs.find(root))


def test_remote_run_dir_round_trips_json_and_parquet(remote_run: RunDir) -> None:
    table = pa.table({"item_id": pa.array([1, 2], pa.int64())})

    remote_run.write_json("augment/summary.json", {"users": 2})
    remote_run.write_parquet("data/items.parquet", table)

    assert not remote_run.is_local
    assert remote_run.read_json("augment/summary.json") == {"users": 2}
    assert remote_run.read_parquet("data/items.parquet").equals(table)


def test_remote_writing_folder_replaces_an_earlier_folder(remote_run: RunDir) -> None:
    publish_folder(remote_run, "model", {"weights.txt": "first", "stale.txt": "only in the first version"})

    publish_folder(remote_run, "model", {"weights.txt": "second"})

    assert remote_run.folder_is_complete("model")
    assert remote_files(remote_run, "model") == ["_SUCCESS", "weights.txt"]
    assert remote_run.fs.cat(remote_run.path("model/weights.txt")) == b"second"


def test_remote_scratch_is_a_local_folder_keyed_by_the_run(remote_run: RunDir) -> None:
    folder = remote_run.scratch("pretrain/checkpoints")

    assert folder.is_dir()
    assert folder.parts[-3:] == (run_key(remote_run.uri), "pretrain", "checkpoints")
    assert remote_run.scratch("pretrain/checkpoints") == folder


def test_remote_reading_folder_yields_the_published_files(remote_run: RunDir) -> None:
    publish_folder(remote_run, "model", {"weights.txt": "remote"})

    with remote_run.reading_folder("model") as folder:
        assert sorted(path.name for path in folder.iterdir()) == ["_SUCCESS", "weights.txt"]
        assert (folder / "weights.txt").read_text() == "remote"
