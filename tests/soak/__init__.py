"""Recovery harnesses: kill a sync anywhere, storm it with faults, feed it bad data, then prove both sides agree.

`harness` starts `truth-forge sync` as a subprocess against the in-process sandbox and kills it after a chosen
number of answered requests; `convergence` compares the warehouse and Twenty record by record. The deterministic
kill test (tests/sync/test_kill_recovery.py) and the soak trials (`make soak`) are both built on them.
"""
