"""Run `run_mtl.py`'s entry point in-process on bad input and check its promise: exit code 2, ONE line on stderr
naming what is wrong and where, no traceback, and nothing new or changed in `output_dir`.

In-process (one interpreter for every case) so that a table of dozens of bad inputs adds seconds to the suite.
"""

from __future__ import annotations

import contextlib
import io
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import run_mtl

ERROR_PREFIX = "run_mtl.py: error: "


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory` with its size and modification time, and every folder (`name/`, the folder itself
    `./`), so that an empty folder left behind counts as a change too. Empty if the folder does not exist."""
    if not directory.exists():
        return {}
    if directory.is_file():
        stat = directory.stat()
        return {".": (stat.st_size, stat.st_mtime_ns)}
    found = {"./": (0, 0)}
    for path in sorted(directory.rglob("*")):
        if path.is_dir():
            found[f"{path.relative_to(directory)}/"] = (0, 0)
        elif path.is_file():
            found[str(path.relative_to(directory))] = (path.stat().st_size, path.stat().st_mtime_ns)
    return found


@dataclass
class Outcome:
    code: int
    stderr: str
    stdout: str
    changed: dict[str, object] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(ERROR_PREFIX)]


def run_cli(argv: list[str], output_dir: Path) -> Outcome:
    """`run_mtl.cli(argv)` with stdout/stderr captured; an exception escaping it is recorded as a traceback."""
    before = snapshot(output_dir)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            run_mtl.cli(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # noqa: BLE001 - a traceback is exactly what the test must report
            code = 1
            err.write(traceback.format_exc())
    after = snapshot(output_dir)
    changed = {name: after.get(name) for name in set(before) | set(after) if before.get(name) != after.get(name)}
    return Outcome(code=code, stderr=err.getvalue(), stdout=out.getvalue(), changed=changed)


def assert_one_line_error(outcome: Outcome, *patterns: str) -> str:
    """Exit code 2, one `run_mtl.py: error:` line matching every regex pattern, no traceback, output_dir untouched."""
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.stderr[-3000:]
    assert outcome.code == 2, f"exit code {outcome.code}; stderr: {outcome.stderr[-2000:]}"
    assert len(outcome.errors) == 1, outcome.stderr[-2000:]
    line = outcome.errors[0]
    for pattern in patterns:
        assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    assert not outcome.changed, f"output_dir changed: {sorted(outcome.changed)}"
    return line
