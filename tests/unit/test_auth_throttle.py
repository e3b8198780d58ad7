"""The failed-login throttle (pure: the tests pass the time)."""

from __future__ import annotations

import pytest

from companion_hub.auth.throttle import FailedLogins

IP = "192.0.2.7"


def test_locks_out_after_max_failures_within_the_window() -> None:
    t = FailedLogins(3, window_s=60, lockout_s=30)
    assert t.allowed(IP, 0.0)
    assert t.failed(IP, 0.0) is False
    assert t.failed(IP, 1.0) is False
    assert t.allowed(IP, 1.5)
    assert t.failed(IP, 2.0) is True  # the third: locked out
    assert not t.allowed(IP, 2.0)
    assert t.retry_after(IP, 12.0) == pytest.approx(20.0)
    assert not t.allowed(IP, 31.9)
    assert t.allowed(IP, 32.0)
    assert t.retry_after(IP, 32.0) == 0.0


def test_other_addresses_are_not_affected() -> None:
    t = FailedLogins(1, window_s=60, lockout_s=30)
    t.failed(IP, 0.0)
    assert not t.allowed(IP, 1.0)
    assert t.allowed("192.0.2.8", 1.0)
    assert t.allowed("2001:db8::1", 1.0)


def test_failures_outside_the_window_do_not_count() -> None:
    t = FailedLogins(3, window_s=10, lockout_s=30)
    t.failed(IP, 0.0)
    t.failed(IP, 5.0)
    assert t.failed(IP, 10.0) is False  # the first has left the window (sliding)
    assert t.allowed(IP, 10.0)
    assert t.failed(IP, 14.0) is True  # 5, 10, 14
    assert not t.allowed(IP, 14.0)


def test_after_a_lockout_the_count_starts_again() -> None:
    t = FailedLogins(2, window_s=100, lockout_s=10)
    t.failed(IP, 0.0)
    assert t.failed(IP, 1.0) is True
    assert t.allowed(IP, 11.0)
    assert t.failed(IP, 11.0) is False
    assert t.failed(IP, 12.0) is True


def test_a_failure_during_a_lockout_does_not_extend_it() -> None:
    t = FailedLogins(1, window_s=60, lockout_s=10)
    assert t.failed(IP, 0.0) is True
    assert t.failed(IP, 5.0) is False
    assert t.allowed(IP, 10.0)


def test_success_clears() -> None:
    t = FailedLogins(3, window_s=60, lockout_s=30)
    t.failed(IP, 0.0)
    t.failed(IP, 1.0)
    t.succeeded(IP)
    assert len(t) == 0
    assert t.failed(IP, 2.0) is False
    assert t.failed(IP, 3.0) is False
    assert t.allowed(IP, 3.0)
    t.succeeded("198.51.100.1")  # unknown: nothing happens


def test_lockout_zero_never_locks_out() -> None:
    t = FailedLogins(1, window_s=60, lockout_s=0)
    for i in range(10):
        assert t.failed(IP, float(i)) is False
        assert t.allowed(IP, float(i))


def test_memory_is_bounded_and_the_least_recent_goes_first() -> None:
    t = FailedLogins(5, window_s=60, lockout_s=30, max_addresses=3)
    t.failed("10.0.0.1", 0.0)
    t.failed("10.0.0.2", 1.0)
    t.failed("10.0.0.3", 2.0)
    t.failed("10.0.0.1", 3.0)  # 10.0.0.1 is now the most recent
    t.failed("10.0.0.4", 4.0)  # evicts 10.0.0.2
    assert len(t) == 3
    assert t.key("10.0.0.2") not in t._records
    assert {"10.0.0.1", "10.0.0.3", "10.0.0.4"} == set(t._records)
    for i in range(10_000):
        t.failed(f"10.1.{i // 256}.{i % 256}", 5.0)
    assert len(t) == 3


def test_default_bound() -> None:
    t = FailedLogins(5, window_s=60, lockout_s=30)
    for i in range(10_050):
        t.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0.0)
    assert len(t) == 10_000


def test_failures_per_address_are_bounded() -> None:
    t = FailedLogins(4, window_s=1e9, lockout_s=0)
    for i in range(1000):
        t.failed(IP, float(i))
    assert len(t._records[IP].failures) == 4


def test_ipv6_counts_per_64() -> None:
    t = FailedLogins(2, window_s=60, lockout_s=30)
    t.failed("2001:db8:1:2::1", 0.0)
    assert t.failed("2001:db8:1:2:ffff::9", 1.0) is True
    assert not t.allowed("2001:db8:1:2::abcd", 2.0)
    assert t.allowed("2001:db8:1:3::1", 2.0)
    assert t.key("2001:db8:1:2::1") == "2001:db8:1:2::/64"


def test_ipv6_per_address_when_asked() -> None:
    t = FailedLogins(1, window_s=60, lockout_s=30, ipv6_prefix=128)
    t.failed("2001:db8::1", 0.0)
    assert not t.allowed("2001:db8::1", 1.0)
    assert t.allowed("2001:db8::2", 1.0)


def test_address_forms() -> None:
    t = FailedLogins(1, window_s=60, lockout_s=30)
    assert t.key("::ffff:192.0.2.7") == IP  # IPv4-mapped
    assert t.key("fe80::1%eth0") == "fe80::/64"  # a zone
    assert t.key("not-an-ip") == "not-an-ip"
    t.failed("::ffff:192.0.2.7", 0.0)
    assert not t.allowed(IP, 1.0)
    assert t.allowed("::1", 1.0)
    t.failed("unix-socket", 0.0)
    assert not t.allowed("unix-socket", 1.0)


def test_prune() -> None:
    t = FailedLogins(2, window_s=10, lockout_s=100)
    t.failed("10.0.0.1", 0.0)  # stale at 10
    t.failed("10.0.0.2", 0.0)
    t.failed("10.0.0.2", 1.0)  # locked out until 101
    t.failed("10.0.0.3", 9.0)  # still in the window at 15
    assert t.prune(15.0) == 1
    assert set(t._records) == {"10.0.0.2", "10.0.0.3"}
    assert t.prune(200.0) == 2
    assert len(t) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0, "window_s": 60, "lockout_s": 60},
        {"max_failures": 5, "window_s": 0, "lockout_s": 60},
        {"max_failures": 5, "window_s": 60, "lockout_s": -1},
        {"max_failures": 5, "window_s": 60, "lockout_s": 60, "max_addresses": 0},
        {"max_failures": 5, "window_s": 60, "lockout_s": 60, "ipv6_prefix": 0},
        {"max_failures": 5, "window_s": 60, "lockout_s": 60, "ipv6_prefix": 129},
    ],
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailedLogins(**kwargs)  # type: ignore[arg-type]
