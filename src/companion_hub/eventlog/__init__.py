"""The event log: durable append-only history, restart recovery, audit tools."""
