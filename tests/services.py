"""Real services for tests, started as processes on loopback: PostgreSQL clusters, and any long-running command.

Not collected by pytest (no test_ prefix); test modules import what they start from here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def wait_for(what: str, check: Callable[[], object], within_s: float, logs: Path) -> object:
    """``check()``'s first truthy value, polled every second; fails naming ``what`` and the newest log lines."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in sorted(logs.glob("*.log")))
    pytest.fail(f"{what} did not happen within {within_s:.0f} s\n{tails}")


class Processes:
    """Long-running services, each in its own session with a log file; all stopped by ``stop_all``."""

    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs, self.env, self.running = logs, env, {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with (self.logs / f"{name}.log").open("a") as log:
            process = subprocess.Popen(
                args, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.running[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL to the whole process group, as a crashed machine would leave it."""
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        """Newest first, so that the databases outlive their clients; SIGKILL after 30 s."""
        for process in reversed(self.running.values()):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except ProcessLookupError:
                continue
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        self.running.clear()


def _as_postgres(*args: str) -> list[str]:
    """PostgreSQL refuses to run as root: root runs its tools as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


def start_postgres(processes: Processes, port: int, data: Path, databases: tuple[str, ...]) -> None:
    """A throwaway cluster in ``data`` (trust auth on loopback) holding ``databases``, user postgres."""
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    init = subprocess.run(
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"),
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stderr
    processes.start(
        "postgres",
        *_as_postgres(
            str(PG_BIN / "postgres"),
            "-D",
            str(data / "db"),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ),
    )
    is_ready = [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
    wait_for(
        "PostgreSQL accepting connections",
        lambda: subprocess.run(is_ready, capture_output=True).returncode == 0,
        60,
        processes.logs,
    )
    for database in databases:
        created = subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
            capture_output=True,
            text=True,
        )
        assert created.returncode == 0, created.stderr
