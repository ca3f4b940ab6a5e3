"""Run the corrupted-input corpus and write the table: kind → where the run stopped → the message.

.venv/bin/python -m benchmarks.corrupted_inputs   (from the repository root)
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recsys_tasks.settings import Settings
from tests.corrupted_inputs import CORPUS, run_corruption

RESULT = Path(__file__).parent / "results" / "corrupted_inputs.md"


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, corruption in enumerate(CORPUS):
            case = Path(scratch) / str(number)
            stage, message = run_corruption(corruption, case / "data", Settings(home=case / "home"))
            # Temporary paths would only be noise in the table.
            rows.append((corruption.kind, stage, re.sub(rf"{re.escape(scratch)}/\d+", "…", message)))
    table = Table("kind of broken input", "stopped at", "message")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)
    lines = ["| kind of broken input | stopped at | message |", "|---|---|---|"]
    escaped_pipe = "\\|"
    lines += [f"| {kind} | `{stage}` | {message.replace('|', escaped_pipe)} |" for kind, stage, message in rows]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print(f"written to {RESULT}")


if __name__ == "__main__":
    main()
