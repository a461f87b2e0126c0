"""webapp.ratelimit: exponential back-off per client address and per account, no global lock, known (address,
account) pairs unaffected by others' failures, the password check off the event loop. The same attacks over real
HTTP are in test_attacks.py."""

import asyncio
import inspect
import threading

import pytest
from fastapi import HTTPException

from webapp.http_guard import CLIENT_ADDRESS
from webapp.ratelimit import MAX_USERNAME_CHARS, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, **kwargs) -> tuple[LoginThrottle, list]:
    calls = []

    def check(username: str, password: str) -> bool:
        calls.append((username, threading.current_thread().name))
        return password == "right"

    return LoginThrottle(check, clock=clock, **kwargs), calls


def login(limit: LoginThrottle, username: str, password: str, address: str = "10.0.0.1") -> bool | int:
    """True/False as Gradio sees it; the HTTP status (429) when the throttle refuses before checking."""

    async def attempt() -> bool:
        CLIENT_ADDRESS.set(address)
        return await limit.login(username, password)

    try:
        return asyncio.run(attempt())
    except HTTPException as refused:
        return refused.status_code


def test_gradio_awaits_it():
    assert inspect.iscoroutinefunction(throttle(Clock())[0].login)  # gradio's /login checks exactly this


def test_spraying_usernames_slows_that_address_only_with_growing_delays():
    clock = Clock()
    limit, calls = throttle(clock, free_failures=3, base_delay_s=2)
    assert [login(limit, f"user{i}", "wrong") for i in range(3)] == [False] * 3
    assert login(limit, "user9", "wrong") == 429  # refused without checking
    assert len(calls) == 3
    assert login(limit, "rita", "right", address="10.0.0.2") is True  # no global lock
    clock.now = 2.0
    assert login(limit, "user10", "wrong") is False  # 4th failure: the next delay doubles
    clock.now = 5.9
    assert login(limit, "user11", "wrong") == 429
    clock.now = 6.0
    assert login(limit, "rita", "right") is True


def test_guessing_one_account_slows_new_addresses_but_not_its_owner_at_a_known_address():
    clock = Clock()
    limit, _ = throttle(clock, free_failures=3, base_delay_s=60)
    assert login(limit, "admin", "right", address="192.168.1.5") is True  # the owner's usual address
    for i in range(6):
        clock.now = i * 0.01
        login(limit, "admin", f"guess{i}", address=f"10.9.0.{i}")  # a botnet: one attempt per address
    assert login(limit, "admin", "guess-x", address="10.9.1.1") == 429
    assert login(limit, "admin", "right", address="10.9.1.2") == 429  # even the right password, from a new address
    assert login(limit, "admin", "right", address="192.168.1.5") is True  # the owner is not locked out


def test_delays_are_capped_and_failures_are_forgotten():
    clock = Clock()
    limit, _ = throttle(clock, free_failures=1, base_delay_s=1, max_delay_s=30, forget_s=100)
    for _ in range(40):
        limit.record("10.0.0.1", "vic", limit.keys("10.0.0.1", "vic"), False)
    assert limit.wait_s(limit.keys("10.0.0.1", "vic")) == pytest.approx(30)
    clock.now = 100
    assert limit.wait_s(limit.keys("10.0.0.1", "vic")) == 0


def test_check_runs_off_the_event_loop_thread_and_huge_names_are_refused():
    limit, calls = throttle(Clock())
    assert login(limit, "vic", "right")
    assert calls[0][1] != threading.main_thread().name
    assert login(limit, "x" * (MAX_USERNAME_CHARS + 1), "right") is False
    assert len(calls) == 1


def test_memory_stays_bounded_under_spraying(monkeypatch):
    monkeypatch.setattr("webapp.ratelimit.MAX_KEYS", 50)
    limit, _ = throttle(Clock())
    for i in range(500):
        limit.record(f"10.0.{i // 256}.{i % 256}", f"user{i}", limit.keys("a", f"user{i}"), False)
    assert len(limit._failures) <= 50
