from companion_hub.core.ratelimit import TokenBucket


def test_bucket_allows_burst_then_rate() -> None:
    b = TokenBucket(rate=10, burst=10, now=0.0)
    assert all(b.take(0.0) for _ in range(10))
    assert not b.take(0.0)
    assert b.take(0.1)  # one token back after 0.1 s
    assert not b.take(0.1)
    assert sum(b.take(100.0) for _ in range(50)) == 10  # never more than the burst
