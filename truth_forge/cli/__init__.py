"""The command line, `truth-forge`: the room a person walks in through. `main` builds the Typer app
and registers every command; `sync`, `status`, `serve`, `doctor` and `demo` each turn their options
into one call into the other rooms (the sync, the real-time server, operations) and its result into
lines, a table or an exit code. Nothing here decides how a sync, a check or a server behaves."""
