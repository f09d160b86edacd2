"""benchmarks/issue22.py's assembly of several scripts' output into one section (no benchmark run)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_support import replace_marked  # noqa: E402
from issue22 import step_lines  # noqa: E402

HEADER = ["| contacts | side |", "|---:|---|"]


def test_a_later_command_adds_its_rows_to_the_first_table() -> None:
    before = "\n".join(["# x86_64, 2 cores, before", *HEADER, "| 50,000 | before |", "", "<!-- {json} -->"])
    after = "\n".join(["WARNING: pip says something", "# x86_64, 2 cores, after", *HEADER, "| 50,000 | after |", ""])
    lines = step_lines([(before, ""), (after, "")])
    assert lines == ["x86_64, 2 cores, before", "", *HEADER, "| 50,000 | before |", "| 50,000 | after |"]


def test_a_scripts_heading_goes_under_the_step_and_a_failure_is_said() -> None:
    lines = step_lines([("## Issue 11 scoreboard\n\ntext", "**`scoreboard.py` exited 1**: its output is in the log.")])
    assert lines[0] == "#### Issue 11 scoreboard"
    assert "**`scoreboard.py` exited 1**: its output is in the log." in lines


def test_marked_sections_of_different_names_live_side_by_side() -> None:
    doc = replace_marked("# Benchmarks\n", "issue-22-report", "benchmarks/issue22.py", "one")
    doc = replace_marked(doc, "other", "x.py", "two")
    doc = replace_marked(doc, "issue-22-report", "benchmarks/issue22.py", "three")
    assert "three" in doc and "two" in doc and "one" not in doc
    assert doc.index("three") < doc.index("two")
