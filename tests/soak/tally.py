"""The soak's running totals, printed as one summary line at the end of `make soak`.

Trials add what they did (kills and SIGTERMs, storms, fencing, hostile records) and what they found,
and count what happened inside them (edits between a kill and its rerun, SIGSTOP pauses); `conftest.py` prints
the line from `pytest_terminal_summary`, so it shows whether the trials passed or not.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    trials: int = 0
    faults: int = 0
    records: int = 0
    discrepancies: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    def trial(self, kind: str, *, faults: int = 0, records: int = 0, discrepancies: int = 0) -> None:
        self.trials += 1
        self.faults += faults
        self.records += records
        self.discrepancies += discrepancies
        self.kinds[kind] += 1

    def count(self, kind: str, n: int = 1) -> None:
        """Something that happened within trials (edits between a kill and its rerun, pauses), not a trial."""
        if n:
            self.kinds[kind] += n

    def line(self) -> str:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(self.kinds.items()))
        return (f"soak: {self.trials} trials, {self.faults} faults injected, {self.records} records checked, "
                f"{self.discrepancies} discrepancies found [{kinds}]")


TALLY = Tally()
