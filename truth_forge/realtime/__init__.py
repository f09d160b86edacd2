"""The real-time path, `truth-forge serve`: take Twenty's webhooks as they happen and write them to
the warehouse within seconds. The server verifies and stores each delivery (`server`, `webhooks`,
`inbox`, `group_commit`); a writer child process holds the warehouse's writer lease and
applies the stored events through the sync's own pull path (`writer`, `applier`)."""
