"""Run the test suite's corpus of broken inputs and write the table: kind → where the run stopped → exit code → message.

.venv/bin/python -m benchmarks.corrupted_inputs   (from the repository root)

The corpus and its runner belong to the tests (tests/corrupted_inputs.py), which assert where each case
must stop. This script does not import them: it runs that test file with pytest and reads back what
each case recorded with ``record_property``, so benchmarks and tests stay independent packages and the
table shows exactly what the test saw, with how long each case took.
"""

from __future__ import annotations

import sys

import pytest
from rich.console import Console
from rich.table import Table

from benchmarks.common import RESULTS, ROOT

CORPUS_TEST = ROOT / "tests" / "test_corrupted_inputs.py"
RESULT = RESULTS / "corrupted_inputs.md"


class CaseOutcomes:
    """A pytest plugin that keeps each corpus case's recorded outcome and its duration, in run order."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        recorded = dict(report.user_properties)
        if report.when != "call" or "stopped_at" not in recorded:
            return
        message = recorded["message"]
        # The case's temporary folders would only be noise in the table.
        for folder in recorded["folders"]:
            message = message.replace(folder, "…")
        self.rows.append(
            (recorded["kind"], recorded["stopped_at"], str(recorded["exit_code"]), message, f"{report.duration:.1f}")
        )


def main() -> int:
    outcomes = CaseOutcomes()
    exit_code = pytest.main([str(CORPUS_TEST), "-q", "-p", "no:cacheprovider"], plugins=[outcomes])
    table = Table("input", "stopped at", "exit", "message", "seconds")
    for row in outcomes.rows:
        table.add_row(*row)
    Console(width=200).print(table)
    lines = ["| input | stopped at | exit | message |", "|---|---|---|---|"]
    escaped_pipe = "\\|"
    lines += [
        f"| {kind} | `{stage}` | {code} | {message.replace('|', escaped_pipe)} |"
        for kind, stage, code, message, _ in outcomes.rows
    ]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print(f"written to {RESULT}" + ("" if exit_code == 0 else f"; the corpus test failed (pytest exit {exit_code})"))
    return int(exit_code)


if __name__ == "__main__":
    sys.exit(main())
