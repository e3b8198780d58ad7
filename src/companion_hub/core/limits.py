"""Protocol limits (section 1), defined once. Configuration may override the defaults."""

from __future__ import annotations

from dataclasses import dataclass

MAX_SEGMENT_CHARS = 64
COMMAND_TIMEOUT_DEFAULT_MS = 5_000
COMMAND_TIMEOUT_MAX_MS = 60_000
IDEMPOTENCY_WINDOW_MS = 10 * 60 * 1000
HELLO_TIMEOUT_S = 10.0
# Arrays and objects may nest at most this many levels below the message object: a
# `set` value, `publish` data, a command's params or a reply's result up to 64 levels,
# a batch entry's value 62 (`entries` and the entry object take two). A deeper message
# gets BAD_REQUEST. The bound keeps every decoded value far from the interpreter's
# recursion limit, where msgspec (decoding, encoding) and json_equal would fail.
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Limits:
    frame_bytes: int = 1024 * 1024
    value_bytes: int = 256 * 1024
    key_bytes: int = 256
    subscriptions: int = 64
    patterns_per_subscription: int = 64
    commands_in_flight: int = 64
    event_queue: int = 1000
    # In-memory change history kept for incremental resume (changes, not bytes).
    history_changes: int = 1_000_000
    # Idempotency keys remembered per client (besides the 10-minute window).
    idempotency_keys_per_client: int = 10_000
    # Bytes of command outcomes remembered for idempotency, across all clients: each
    # record counts its encoded result (or error) plus a small constant. Beyond it the
    # oldest finished records are forgotten first (a retry of one executes again).
    idempotency_bytes: int = 32 * 1024 * 1024
    # Requests per second per connection (a token bucket holding one second's worth);
    # more get RATE_LIMITED.
    requests_per_second: int = 100_000

    def to_wire(self) -> dict[str, int]:
        return {
            "frame_bytes": self.frame_bytes,
            "value_bytes": self.value_bytes,
            "key_bytes": self.key_bytes,
            "subscriptions": self.subscriptions,
            "patterns_per_subscription": self.patterns_per_subscription,
            "commands_in_flight": self.commands_in_flight,
            "event_queue": self.event_queue,
            "requests_per_second": self.requests_per_second,
        }
