"""webapp.ratelimit: per-username lockout, global failure budget, expiry, and a password check off the event loop."""

import asyncio
import inspect
import threading

from webapp.ratelimit import MAX_USERNAME_CHARS, LoginRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **kwargs) -> tuple[LoginRateLimiter, list]:
    calls = []

    def check(username: str, password: str) -> bool:
        calls.append((username, threading.current_thread().name))
        return password == "right"

    return LoginRateLimiter(check, clock=clock, **kwargs), calls


def login(limit: LoginRateLimiter, username: str, password: str) -> bool:
    return asyncio.run(limit.login(username, password))


def test_gradio_awaits_it():
    limit, _ = limiter(Clock())
    assert inspect.iscoroutinefunction(limit.login)  # gradio's /login checks exactly this


def test_locks_one_username_after_max_failures_even_with_the_right_password():
    clock = Clock()
    limit, calls = limiter(clock, max_failures=3, window_s=60)
    assert [login(limit, "vic", "wrong") for _ in range(3)] == [False] * 3
    assert login(limit, "vic", "right") is False  # locked: the password is not even checked
    assert len(calls) == 3
    assert login(limit, "rita", "right") is True  # other accounts are unaffected
    clock.now = 61
    assert login(limit, "vic", "right") is True  # the failures aged out


def test_success_clears_the_failures():
    limit, _ = limiter(Clock(), max_failures=3)
    login(limit, "vic", "wrong")
    login(limit, "vic", "wrong")
    assert login(limit, "vic", "right")
    assert not login(limit, "vic", "wrong") and not login(limit, "vic", "wrong")
    assert login(limit, "vic", "right")


def test_global_budget_stops_spraying_many_usernames():
    clock = Clock()
    limit, calls = limiter(clock, max_failures=5, max_global_failures=10, window_s=60)
    for i in range(10):
        assert not login(limit, f"user{i}", "wrong")
    assert login(limit, "rita", "right") is False
    assert len(calls) == 10
    clock.now = 60
    assert login(limit, "rita", "right") is True


def test_check_runs_off_the_event_loop_thread_and_huge_names_are_refused():
    limit, calls = limiter(Clock())
    assert login(limit, "vic", "right")
    assert calls[0][1] != threading.main_thread().name
    assert login(limit, "x" * (MAX_USERNAME_CHARS + 1), "right") is False
    assert len(calls) == 1


def test_memory_stays_bounded_under_spraying():
    clock = Clock()
    limit, _ = limiter(clock, max_global_failures=5, window_s=1)
    for i in range(500):
        clock.now = i * 2.0  # each failure has aged out before the next
        limit.record(f"user{i}", False)
    assert len(limit._failures) <= 10 * limit.max_global_failures + 1
