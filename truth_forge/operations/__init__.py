"""Running truth-forge day to day: what an operator watches and what tells them when to act. Status and
its snapshot for a warehouse that is busy, progress and summaries of a run, alerts when errors open or
close, failures that explain themselves with an exit code and a fix, runs on a schedule, log lines for
people and collectors, and `doctor`'s checks of a live workspace."""
