"""Run the input corpus through the CLI and write the table: kind → where the run stopped → exit code → message.

.venv/bin/python -m benchmarks.corrupted_inputs   (from the repository root)
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.corrupted_inputs import CORPUS, run_case

RESULT = Path(__file__).parent / "results" / "corrupted_inputs.md"


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        for number, case in enumerate(CORPUS):
            outcome = run_case(case, Path(scratch) / str(number), home, f"case-{number}")
            # Temporary paths would only be noise in the table.
            message = re.sub(rf"{re.escape(scratch)}/(\d+|home)", "…", outcome.message)
            rows.append((case.kind, outcome.stage, str(outcome.exit_code), message))
    table = Table("input", "stopped at", "exit", "message")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)
    lines = ["| input | stopped at | exit | message |", "|---|---|---|---|"]
    escaped_pipe = "\\|"
    lines += [
        f"| {kind} | `{stage}` | {code} | {message.replace('|', escaped_pipe)} |" for kind, stage, code, message in rows
    ]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print(f"written to {RESULT}")


if __name__ == "__main__":
    main()
