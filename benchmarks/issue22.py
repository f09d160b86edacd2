"""Every figure issue 22 asks for, before and after, in one run, written to BENCHMARKS.md.

Issue 22 ("the sync process never the bottleneck") wants, side by side in one run with the load
average: records per CPU-second of the sync process and its peak RSS in a first push at 50k and 1M
contacts; requests per minute against a sandbox allowing 600/min with 600 ms latency; the webhook
receiver paced at 1,000 events/s; and the scoreboard's rows 1-3 and 6. Each figure has its own
benchmark script; this one runs them in turn, "before" being the code the issue was filed against
(`--before`, default e9762fa, exported with `git archive`) and "after" this checkout, and rewrites
its section of BENCHMARKS.md after every step, so a run cut short keeps what it measured. The full
output of every step goes to `--log`.

    .venv/bin/python benchmarks/issue22.py --write BENCHMARKS.md            # 19 minutes on an idle machine
    .venv/bin/python benchmarks/issue22.py --sizes 50000 --skip scoreboard  # quicker, no 1M

The before side's first push runs with DuckDB's `memory_limit=1GB`: at the default (160 MB) that code
runs out of memory in the journal's fold at 50k (BENCHMARKS.md, "Sync process CPU per record"), so
its peak RSS is that of a 1 GB pool; the after side runs with the defaults users get.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import ROOT, git_commit, load_average, machine_line, replace_marked, today  # noqa: E402

ISSUE_BASE = "e9762fa"  # main when issue 22 was filed
SECTION = "issue-22-report"
BEFORE_POOL = "?memory_limit=1GB"


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    commands: tuple[tuple[str, ...], ...]  # scripts in benchmarks/ with their arguments, run in turn
    note: str = ""


def steps(before: str, sizes: list[int]) -> list[Step]:
    push = [Step(f"cpu-{n}", f"First push of {n:,} contacts: records per CPU-second and peak RSS",
                 (("bench_sync_cpu.py", "--before", before, "--only", "before", "--sizes", str(n),
                   "--url-options", BEFORE_POOL),
                  ("bench_sync_cpu.py", "--only", "after", "--sizes", str(n))),
                 "Goals: at least 5,000 records per CPU-second, not falling with N; peak RSS at most 400 MB "
                 "(381.5 MiB). Before runs with a 1 GB DuckDB pool (it runs out of memory at the default), "
                 "after with the defaults.")
            for n in sizes]
    small, large = push[:1], push[1:]  # the longest runs last: a run cut short keeps the rest
    return [*small,
            Step("pace", "Requests per minute against a sandbox allowing 600/min, bucket 20, 600 ms a request",
                 (("bench_push_pace.py", "--before", before, "--contacts", "50000", "--url-options", BEFORE_POOL),),
                 "Goal: at least 95 % of 600. Both sides with a 1 GB DuckDB pool (the before code needs it "
                 "at 50k; the pace is about requests, not memory)."),
            Step("receiver", "Webhook receiver paced at 1,000 events/s, writer idle (the request path alone)",
                 (("bench_receiver.py", "--before", before, "--rate", "1000", "--seconds", "10"),),
                 "Goal: at least 1,000 acknowledged a second, p99 under 50 ms."),
            Step("webhooks", "Webhook receiver paced at 1,000 events/s while the writer applies them",
                 (("bench_webhooks.py", "--before", before, "--rate", "1000", "--seconds", "10",
                   "--contacts", "1000", "--burst", "3000"),),
                 "The same goal, with serve's writer applying every event to the warehouse on the same cores."),
            Step("scoreboard", "Scoreboard rows 1-3 and 6 (after only; their before is issue 11's table)",
                 (("scoreboard.py", "--quick", "--only", "steady", "first", "reruns", "--no-naive"),),
                 "Rows 1-2 with the client's default concurrency and bucket; row 3 at 6,000 contacts, the "
                 "client told the limit only (it learns the batch of 200), the floor counting the server's "
                 "bucket of 20; row 6 at most 5 requests."),
            *large]


def run_step(step: Step, timeout: float, log) -> tuple[list[str], str, str]:
    """The step's Markdown lines (its commands' outputs, `step_lines`), and the load average before
    and after it."""
    load_before = load_average()
    outputs: list[tuple[str, str]] = []
    for command in step.commands:
        argv = [sys.executable, str(ROOT / "benchmarks" / command[0]), *command[1:]]
        log.write(f"\n$ {' '.join(argv[1:])}\n")
        log.flush()
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            out, failed = done.stdout, (f"exited {done.returncode}" if done.returncode else "")
            log.write(out + done.stderr)
        except subprocess.TimeoutExpired as expired:
            out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            failed = f"stopped after {timeout:.0f} s"
            log.write(out)
        outputs.append((out, f"**`{command[0]}` {failed}**: its output is in the log." if failed else ""))
    return step_lines(outputs), load_before, load_average()


def step_lines(outputs: list[tuple[str, str]]) -> list[str]:
    """What a step's commands printed, as one piece of Markdown: each (output, failure) in turn, the
    later commands' table rows joining the first one's table (its header, machine line and blank lines
    left out), a script's "# machine" line as text and its "## section" heading under the step's."""
    kept: list[str] = []
    for out, failure in outputs:
        later = bool(kept)
        while later and not kept[-1].strip():
            kept.pop()  # a blank line would end the table its rows go on
        for line in out.splitlines():
            if line.startswith("<!--") or line.startswith("WARNING"):
                continue  # per-run JSON details (in the log) and pip's notices
            if later and (line.startswith("# ") or not line.strip() or (line.startswith("|") and line in kept)):
                continue
            if line.startswith("# "):
                kept += [line[2:], ""]
            else:
                kept.append("#### " + line[3:] if line.startswith("## ") else line)
        if failure:
            kept += ["", failure, ""]
    return kept


def render(results: list[tuple[Step, list[str], str, str]], before: str, started: str, commands: str,
           code: str) -> str:
    lines = ["## Issue 22: every figure, before and after, in one run", "",
             "What it shows: the figures issue 22 asks for, each measured by its own benchmark script, "
             f"all in one run of `benchmarks/issue22.py`: before = {before} (main when the issue was filed, "
             "exported with `git archive`), after = this checkout. Each step's load average (1, 5 and 15 "
             "minutes) is read before and after it; 2 cores, so a load above 2 means the runs shared them.",
             "", f"Command: `{commands}`  ", f"Machine: {machine_line()}  ",
             f"Started {started}; code: {code}", ""]
    for step, kept, load_before, load_after in results:
        lines += [f"### {step.title}", "", step.note, "",
                  "Commands: " + "; ".join(f"`{' '.join(c)}`" for c in step.commands) + "  ",
                  f"Load average: {load_before} before, {load_after} after", "", *kept, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=ISSUE_BASE, help=f"git ref of the before code (default {ISSUE_BASE})")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000], help="first-push sizes")
    parser.add_argument("--skip", nargs="+", default=[], metavar="STEP",
                        help="leave out steps by name: cpu-N, pace, receiver, webhooks, scoreboard")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per command before it is stopped")
    parser.add_argument("--write", type=Path, help="rewrite this report's section of this file (BENCHMARKS.md)")
    parser.add_argument("--log", type=Path, default=ROOT / ".bench" / "issue22.log", help="every step's full output")
    args = parser.parse_args()
    chosen = [s for s in steps(args.before, args.sizes) if s.name not in args.skip]
    command = "benchmarks/issue22.py " + " ".join(sys.argv[1:])
    started, code = today(), git_commit()  # what runs is the code as it was when the run began
    args.log.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with args.log.open("w") as log:
        for step in chosen:
            began = time.monotonic()
            print(f"{today()}: {step.name} ...", flush=True)
            results.append((step, *run_step(step, args.timeout, log)))
            section = render(results, args.before, started, command, code)
            print(f"  {time.monotonic() - began:.0f} s", flush=True)
            if args.write:
                args.write.write_text(replace_marked(args.write.read_text(), SECTION,
                                                     "benchmarks/issue22.py", section))
    if not args.write:
        print(section)
    print(f"full output: {os.path.relpath(args.log, ROOT)}")


if __name__ == "__main__":
    main()
